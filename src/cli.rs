//! The `portmgr` command line: parsing and printing over core calls (filled in by the CLI work).
