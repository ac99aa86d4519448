//! Usage time series: the calendar grid of a query and the folding of aggregate cells into it.

pub mod build;
pub mod grid;
pub mod spend;

pub use build::{Cell, Dimension, Series, build};
pub use grid::{Grid, Interval, ReadPlan, parse_instant};
