//! qmp-smol: not yet implemented (see the project issues).
