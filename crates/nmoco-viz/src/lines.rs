//! Line charts: panels of (x, y) series side by side, with axes, tick labels and a legend,
//! drawn on a [`Canvas`]. Used for training curves (loss, kNN accuracy, learning rate).

use crate::canvas::{BLACK, Canvas, GREY, Rgb, WHITE};

/// One named series of points, drawn as a polyline (and optionally square markers).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: Rgb,
    pub markers: bool,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>, color: Rgb) -> Self {
        Self {
            name: name.into(),
            points,
            color,
            markers: false,
        }
    }

    /// Also draw a small square at every point.
    pub fn with_markers(mut self) -> Self {
        self.markers = true;
        self
    }
}

/// One chart: a title, an x-axis label and its series sharing the axes.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub series: Vec<Series>,
}

/// The data range of a panel's finite points, widened when degenerate.
pub fn bounds(series: &[Series]) -> Option<((f64, f64), (f64, f64))> {
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let mut it = pts.peekable();
    it.peek()?;
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in it {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let widen = |a: f64, b: f64| {
        if b - a > 1e-12 {
            (a, b)
        } else {
            let d = a.abs().max(1.0) * 0.05;
            (a - d, b + d)
        }
    };
    Some((widen(x0, x1), widen(y0, y1)))
}

/// A short label for an axis value.
pub fn format_tick(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// Draw one panel into a `width × height` canvas.
pub fn draw_panel(panel: &Panel, width: usize, height: usize) -> Canvas {
    let mut c = Canvas::new(width, height, WHITE);
    let (w, h) = (width as i64, height as i64);
    let (left, right, top, bottom) = (70i64, 10i64, 24i64, 40i64);
    let (pw, ph) = ((w - left - right).max(1), (h - top - bottom).max(1));
    let tw = Canvas::text_width(&panel.title, 2);
    c.text((w - tw) / 2, 4, &panel.title, 2, BLACK);
    c.rect(left, top, pw, ph, BLACK);
    let Some(((x0, x1), (y0, y1))) = bounds(&panel.series) else {
        c.text(left + 10, top + ph / 2, "no data yet", 1, BLACK);
        return c;
    };
    let px = |x: f64| left + ((x - x0) / (x1 - x0) * (pw - 1) as f64).round() as i64;
    let py = |y: f64| top + ph - 1 - ((y - y0) / (y1 - y0) * (ph - 1) as f64).round() as i64;
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let (yv, xv) = (y0 + f * (y1 - y0), x0 + f * (x1 - x0));
        let (yy, xx) = (py(yv), px(xv));
        if i > 0 && i < 4 {
            c.line(left + 1, yy, left + pw - 2, yy, GREY);
        }
        let yl = format_tick(yv);
        c.text(left - 4 - Canvas::text_width(&yl, 1), yy - 3, &yl, 1, BLACK);
        let xl = format_tick(xv);
        c.line(xx, top + ph, xx, top + ph + 3, BLACK);
        let xw = Canvas::text_width(&xl, 1);
        c.text((xx - xw / 2).min(w - xw - 1), top + ph + 6, &xl, 1, BLACK);
    }
    let xlw = Canvas::text_width(&panel.x_label, 1);
    c.text(left + (pw - xlw) / 2, h - 12, &panel.x_label, 1, BLACK);
    for s in &panel.series {
        let pts: Vec<(i64, i64)> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| (px(x), py(y)))
            .collect();
        for win in pts.windows(2) {
            c.line(win[0].0, win[0].1, win[1].0, win[1].1, s.color);
        }
        if s.markers || pts.len() == 1 {
            for &(x, y) in &pts {
                c.fill_rect(x - 2, y - 2, 5, 5, s.color);
            }
        }
    }
    // Legend, top right inside the plot.
    let mut ly = top + 4;
    for s in panel.series.iter().filter(|s| !s.name.is_empty()) {
        let lw = Canvas::text_width(&s.name, 1);
        let lx = left + pw - lw - 20;
        c.fill_rect(lx, ly + 2, 10, 3, s.color);
        c.text(lx + 14, ly, &s.name, 1, BLACK);
        ly += 10;
    }
    c
}

/// Panels side by side on one `width × height` canvas.
pub fn plot(panels: &[Panel], width: usize, height: usize) -> Canvas {
    let mut c = Canvas::new(width.max(1), height.max(1), WHITE);
    let n = panels.len().max(1);
    let pw = width / n;
    for (i, p) in panels.iter().enumerate() {
        let sub = draw_panel(p, pw.max(1), height.max(1));
        c.blit(&sub, (i * pw) as i64, 0);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(c: &Canvas, col: Rgb) -> usize {
        c.rgb.chunks(3).filter(|p| *p == col).count()
    }

    #[test]
    fn series_are_drawn_inside_the_frame_in_their_colour() {
        let red = [220, 0, 0];
        let p = Panel {
            title: "loss".into(),
            x_label: "step".into(),
            series: vec![Series::new("", vec![(0.0, 1.0), (10.0, 0.0)], red)],
        };
        let c = draw_panel(&p, 300, 200);
        // The line from top-left to bottom-right of the plot area: endpoints are red.
        assert_eq!(c.get(70, 24), red);
        assert_eq!(c.get(70 + 220 - 1, 24 + 136 - 1), red);
        assert!(count(&c, red) >= 220);
    }

    #[test]
    fn empty_and_degenerate_data_do_not_panic() {
        let p = Panel {
            title: "t".into(),
            x_label: "x".into(),
            series: vec![Series::new("a", vec![], [0, 0, 255])],
        };
        let c = plot(&[p.clone(), p], 400, 120);
        assert_eq!((c.width, c.height), (400, 120));
        let one = Panel {
            title: "t".into(),
            x_label: "x".into(),
            series: vec![Series::new(
                "a",
                vec![(1.0, 5.0), (f64::NAN, 2.0)],
                [0, 0, 255],
            )],
        };
        let c = draw_panel(&one, 200, 120);
        assert!(count(&c, [0, 0, 255]) >= 25);
        assert_eq!(bounds(&one.series), Some(((0.95, 1.05), (4.75, 5.25))));
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(format_tick(0.0), "0");
        assert_eq!(format_tick(0.05), "0.0500");
        assert_eq!(format_tick(2.5), "2.50");
        assert_eq!(format_tick(1500.0), "1500");
        assert_eq!(format_tick(1e-5), "1.0e-5");
    }
}
