//! qmp-blocking: not yet implemented (see the project issues).
