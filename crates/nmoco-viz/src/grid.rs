//! Frame grids: one tile per time step of `T × 2 × H × W` event frames, ON red, OFF blue,
//! each tile labelled with its step number.
//!
//! Input is a plain slice in nmoco-frames order (`((t·2 + c)·H + y)·W + x`, channel 0 = OFF,
//! channel 1 = ON), so this crate needs no frames dependency. Colour: a pixel's red intensity
//! is its ON value and its blue intensity its OFF value, each divided by the largest value of
//! the whole sample (so tiles compare), on a black background; pixels with both polarities are
//! magenta.

use crate::canvas::{Canvas, Rgb};

/// Layout and scaling of a frame grid.
#[derive(Debug, Clone, PartialEq)]
pub struct GridOptions {
    /// Tiles per row; 0 = about `sqrt(T)` rounded up.
    pub columns: usize,
    /// Each frame pixel becomes `scale × scale` screen pixels; 0 = pick so tiles are at least
    /// 96 pixels wide.
    pub scale: usize,
    /// Gap between tiles and around the grid, in pixels.
    pub gap: usize,
    /// Apply `sqrt` to the normalised intensities (makes sparse events visible).
    pub gamma_sqrt: bool,
    /// Optional title drawn above the grid.
    pub title: Option<String>,
}

impl Default for GridOptions {
    fn default() -> Self {
        Self {
            columns: 0,
            scale: 0,
            gap: 4,
            gamma_sqrt: true,
            title: None,
        }
    }
}

/// Background of the page (between tiles).
pub const PAGE: Rgb = [40, 40, 40];
/// Colour of the step labels.
pub const LABEL: Rgb = [255, 255, 255];

/// Errors of [`render_grid`].
#[non_exhaustive]
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GridError {
    #[error("frame data has {len} values, expected t·2·h·w = {t}·2·{h}·{w}")]
    ShapeMismatch {
        len: usize,
        t: usize,
        h: usize,
        w: usize,
    },
    #[error("empty frames: t={t}, h={h}, w={w}")]
    Empty { t: usize, h: usize, w: usize },
}

/// The colour of one pixel from its ON and OFF values and the sample maximum.
pub fn pixel_colour(on: f32, off: f32, max: f32, gamma_sqrt: bool) -> Rgb {
    let norm = |v: f32| -> u8 {
        if max.is_nan() || v.is_nan() || max <= 0.0 || v <= 0.0 {
            return 0;
        }
        let mut r = (v / max).min(1.0);
        if gamma_sqrt {
            r = r.sqrt();
        }
        (r * 255.0).round() as u8
    };
    [norm(on), 0, norm(off)]
}

/// Render `T × 2 × H × W` frames as a grid of tiles.
pub fn render_grid(
    data: &[f32],
    t: usize,
    h: usize,
    w: usize,
    opts: &GridOptions,
) -> Result<Canvas, GridError> {
    if t == 0 || h == 0 || w == 0 {
        return Err(GridError::Empty { t, h, w });
    }
    if t.checked_mul(2 * h).and_then(|v| v.checked_mul(w)) != Some(data.len()) {
        return Err(GridError::ShapeMismatch {
            len: data.len(),
            t,
            h,
            w,
        });
    }
    let cols = if opts.columns > 0 {
        opts.columns.min(t)
    } else {
        (t as f64).sqrt().ceil() as usize
    };
    let rows = t.div_ceil(cols);
    let scale = if opts.scale > 0 {
        opts.scale
    } else {
        96usize.div_ceil(w).max(1)
    };
    let label_h = 7 + 4;
    let title_h = if opts.title.is_some() { 7 * 2 + 8 } else { 0 };
    let (tw, th) = (w * scale, h * scale);
    let gap = opts.gap;
    let width = cols * tw + (cols + 1) * gap;
    let height = title_h + rows * (th + label_h) + (rows + 1) * gap;
    let mut c = Canvas::new(width, height, PAGE);
    if let Some(title) = &opts.title {
        // Large type when it fits, small otherwise.
        let scale = if Canvas::text_width(title, 2) <= (width - 2 * gap) as i64 {
            2
        } else {
            1
        };
        c.text(gap as i64, gap as i64, title, scale, LABEL);
    }
    let max = data
        .iter()
        .copied()
        .fold(0f32, |a, v| if v > a { v } else { a });
    let plane = h * w;
    for ti in 0..t {
        let (col, row) = (ti % cols, ti / cols);
        let x0 = gap + col * (tw + gap);
        let y0 = title_h + gap + row * (th + label_h + gap);
        c.text(x0 as i64, y0 as i64, &format!("t={ti}"), 1, LABEL);
        let ty = y0 + label_h;
        c.fill_rect(x0 as i64, ty as i64, tw as i64, th as i64, [0, 0, 0]);
        let off = &data[(ti * 2) * plane..(ti * 2 + 1) * plane];
        let on = &data[(ti * 2 + 1) * plane..(ti * 2 + 2) * plane];
        for y in 0..h {
            for x in 0..w {
                let col = pixel_colour(on[y * w + x], off[y * w + x], max, opts.gamma_sqrt);
                if col != [0, 0, 0] {
                    c.fill_rect(
                        (x0 + x * scale) as i64,
                        (ty + y * scale) as i64,
                        scale as i64,
                        scale as i64,
                        col,
                    );
                }
            }
        }
    }
    Ok(c)
}

/// Where tile `ti`'s pixel `(y, x)` lands on a canvas made by [`render_grid`] with `opts`
/// (top-left screen pixel of its `scale × scale` block).
pub fn tile_pixel(
    ti: usize,
    y: usize,
    x: usize,
    t: usize,
    w: usize,
    h: usize,
    opts: &GridOptions,
) -> (usize, usize) {
    let cols = if opts.columns > 0 {
        opts.columns.min(t)
    } else {
        (t as f64).sqrt().ceil() as usize
    };
    let scale = if opts.scale > 0 {
        opts.scale
    } else {
        96usize.div_ceil(w).max(1)
    };
    let title_h = if opts.title.is_some() { 7 * 2 + 8 } else { 0 };
    let (tw, th) = (w * scale, h * scale);
    let (col, row) = (ti % cols, ti / cols);
    let x0 = opts.gap + col * (tw + opts.gap);
    let y0 = title_h + opts.gap + row * (th + 11 + opts.gap) + 11;
    (x0 + x * scale, y0 + y * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_is_red_off_is_blue_in_the_right_tile() {
        let (t, h, w) = (3, 4, 5);
        let mut d = vec![0f32; t * 2 * h * w];
        // t=1, ON at (y=2, x=3) value 4; t=2, OFF at (y=0, x=1) value 1.
        d[((2 + 1) * h + 2) * w + 3] = 4.0;
        d[((2 * 2) * h) * w + 1] = 1.0;
        let opts = GridOptions {
            scale: 2,
            gamma_sqrt: false,
            title: Some("X".into()),
            ..Default::default()
        };
        let c = render_grid(&d, t, h, w, &opts).unwrap();
        let (px, py) = tile_pixel(1, 2, 3, t, w, h, &opts);
        assert_eq!(c.get(px, py), [255, 0, 0]);
        assert_eq!(c.get(px + 1, py + 1), [255, 0, 0]);
        let (qx, qy) = tile_pixel(2, 0, 1, t, w, h, &opts);
        assert_eq!(c.get(qx, qy), [0, 0, 64]);
        let (zx, zy) = tile_pixel(0, 2, 3, t, w, h, &opts);
        assert_eq!(c.get(zx, zy), [0, 0, 0]);
        // 3 tiles → 2 columns, 2 rows.
        assert_eq!(c.width, 2 * w * 2 + 3 * 4);
    }

    #[test]
    fn shape_errors() {
        assert!(matches!(
            render_grid(&[0.0; 7], 1, 2, 2, &GridOptions::default()),
            Err(GridError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            render_grid(&[], 0, 2, 2, &GridOptions::default()),
            Err(GridError::Empty { .. })
        ));
    }

    #[test]
    fn colour_scale() {
        assert_eq!(pixel_colour(2.0, 1.0, 2.0, false), [255, 0, 128]);
        assert_eq!(pixel_colour(1.0, 0.0, 0.0, true), [0, 0, 0]);
        assert_eq!(pixel_colour(1.0, 0.0, 4.0, true), [128, 0, 0]);
    }
}
