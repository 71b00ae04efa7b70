//! Small PNG renderers with no ML dependency: an RGB [`Canvas`] with a built-in bitmap font
//! (`canvas`), frame grids (`grid`), training curves (`lines`) and confusion matrices (`heatmap`).

#![forbid(unsafe_code)]

pub mod canvas;
pub mod grid;
pub mod heatmap;
pub mod lines;

pub use canvas::{Canvas, Error, Rgb};
