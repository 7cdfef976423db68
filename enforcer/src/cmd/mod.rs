//! One module per subcommand.
pub mod attach;
pub mod detach;
pub mod list;
pub mod tail;
