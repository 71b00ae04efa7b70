//! Reader options from Python keyword arguments, the per-format flip and the `info` dict.

use crate::errors::bad;
use nmoco_events::{
    Aedat2Layout, Dvs128Polarity, Events, Format, NbinOverflow, ReadOptions, SensorSize,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

pub(crate) struct Opts {
    pub(crate) read: ReadOptions,
    /// SpikingJelly's CIFAR10-DVS orientation: `x = 127 − Y`, `y = 127 − X` (polarity via
    /// `Dvs128Polarity::Jaer`).
    pub(crate) flip: bool,
}

pub(crate) fn parse_format(name: &str) -> PyResult<Format> {
    name.parse::<Format>().map_err(|e| bad(e.to_string()))
}

pub(crate) fn make_opts(
    format: Option<&str>,
    nbin_overflow: &str,
    aedat2_layout: &str,
    dvs128_polarity: Option<&str>,
    keep_special: bool,
    keep_invalid: bool,
    allow_partial_record: bool,
    aedat4_stream: Option<u32>,
    orientation: &str,
) -> PyResult<Opts> {
    let format = format.map(parse_format).transpose()?;
    let nbin_overflow = match nbin_overflow {
        "tonic" => NbinOverflow::Tonic,
        "wrap23" => NbinOverflow::Wrap23,
        "ignore" => NbinOverflow::Ignore,
        o => {
            return Err(bad(format!(
                "nbin_overflow must be 'tonic', 'wrap23' or 'ignore', not {o:?}"
            )));
        }
    };
    let aedat2_layout = match aedat2_layout {
        "auto" => Aedat2Layout::Auto,
        "dvs128" => Aedat2Layout::Dvs128,
        "davis240" => Aedat2Layout::Davis240,
        "davis346" => Aedat2Layout::Davis346,
        o => {
            return Err(bad(format!(
                "aedat2_layout must be 'auto', 'dvs128', 'davis240' or 'davis346', not {o:?}"
            )));
        }
    };
    let flip = match orientation {
        "raw" => false,
        "spikingjelly" => true,
        o => {
            return Err(bad(format!(
                "orientation must be 'raw' or 'spikingjelly', not {o:?}"
            )));
        }
    };
    let dvs128_polarity = match (dvs128_polarity, flip) {
        (None, false) | (Some("bit0_on"), false) => Dvs128Polarity::Bit0On,
        (None, true) | (Some("jaer"), _) => Dvs128Polarity::Jaer,
        (Some("bit0_on"), true) => {
            return Err(bad(
                "orientation='spikingjelly' implies dvs128_polarity='jaer' (SpikingJelly's p = 1 - bit0)",
            ));
        }
        (Some(o), _) => {
            return Err(bad(format!(
                "dvs128_polarity must be 'bit0_on' or 'jaer', not {o:?}"
            )));
        }
    };
    if flip && !matches!(aedat2_layout, Aedat2Layout::Auto | Aedat2Layout::Dvs128) {
        return Err(bad(
            "orientation='spikingjelly' applies to the DVS128 layout (CIFAR10-DVS) only",
        ));
    }
    Ok(Opts {
        read: ReadOptions {
            format,
            nbin_overflow,
            aedat2_layout,
            dvs128_polarity,
            keep_special,
            keep_invalid,
            allow_partial_record,
            aedat4_stream,
            ..ReadOptions::default()
        },
        flip,
    })
}

/// Applies the CIFAR10-DVS orientation in place; only for AEDAT 2.0 DVS128 (128 × 128) data.
pub(crate) fn apply_flip(
    ev: &mut Events,
    format: Format,
    sensor: Option<SensorSize>,
) -> PyResult<()> {
    let dvs128 = SensorSize {
        width: 128,
        height: 128,
    };
    if format != Format::Aedat2 || sensor != Some(dvs128) {
        return Err(bad(format!(
            "orientation='spikingjelly' applies to AEDAT 2.0 DVS128 (128x128) recordings only; this is {format} with sensor {sensor:?}"
        )));
    }
    for i in 0..ev.t.len() {
        let (x, y) = (ev.x[i], ev.y[i]);
        // The DVS128 masks give x, y <= 127, so both subtractions stay in range.
        match (127u16.checked_sub(y), 127u16.checked_sub(x)) {
            (Some(nx), Some(ny)) => {
                ev.x[i] = nx;
                ev.y[i] = ny;
            }
            _ => {
                return Err(bad(format!(
                    "event {i} at x={x}, y={y} is outside the DVS128 sensor"
                )));
            }
        }
    }
    Ok(())
}

/// The `info` dict of `read` and friends: `format`, `sensor_size` (tonic's `(W, H, 2)` or
/// None), `skipped` (a dict by kind) and `n_events`. Keys and format names are interned
/// strings (no new string objects per call).
pub(crate) fn info_dict<'py>(
    py: Python<'py>,
    format: Format,
    sensor: Option<SensorSize>,
    skipped: &nmoco_events::Skipped,
    n: usize,
) -> PyResult<Bound<'py, PyDict>> {
    use pyo3::intern;
    use pyo3::types::PyString;
    let d = PyDict::new(py);
    d.set_item(intern!(py, "format"), PyString::intern(py, format.name()))?;
    d.set_item(
        intern!(py, "sensor_size"),
        sensor.map(|s| (s.width as usize, s.height as usize, 2usize)),
    )?;
    let sk = PyDict::new(py);
    for (k, v) in skipped {
        sk.set_item(PyString::intern(py, k), v)?;
    }
    d.set_item(intern!(py, "skipped"), sk)?;
    d.set_item(intern!(py, "n_events"), n)?;
    Ok(d)
}
