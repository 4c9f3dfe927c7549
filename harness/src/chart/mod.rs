//! Charts as SVG, written by hand (no plotting crate: this is all the
//! drawing kiln needs, and text placement and ticks stay under test):
//!
//! - [`ticks`]: axes (linear, log), at least three ticks on any range, labels
//! - [`document`]: the document and its elements; text width estimates,
//!   cutting and wrapping text to fit
//! - [`bounds`]: the check that every text lies inside the image
//! - [`frame`]: a data area: the value axis, the versions along the bottom
//!   (failed, crashed, hung ones shaded)
//! - [`legend`]: a legend column beside the data area
//! - [`roofline`]: one version's calls on the roofline, arrows from the
//!   previous version's (`kiln report` and the live page)
//! - [`ratios`]: each call's time over the previous version's, by version
//!   (`kiln report` and the live page)
//! - [`png`]: a chart's SVG rendered to PNG with the font kept in the
//!   repository (`kiln report --png`; cargo feature `png`)
//!
//! Nothing here knows the rest of kiln (layer 0); `kiln-bench` draws its
//! report with it too.

pub mod bounds;
pub mod document;
pub mod frame;
pub mod legend;
#[cfg(feature = "png")]
pub mod png;
pub mod ratios;
pub mod roofline;
pub mod ticks;
