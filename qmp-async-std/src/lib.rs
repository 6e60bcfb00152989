//! qmp-async-std: not yet implemented (see the project issues).
