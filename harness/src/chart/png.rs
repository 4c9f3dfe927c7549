//! A chart as PNG (`kiln report --png`): the SVG text kiln wrote, rendered
//! by `resvg` with the one font kept in the repository, DejaVu Sans
//! (`harness/assets/fonts/`, its license beside it), built into the
//! binary. No system font is looked up: every generic family (the
//! writer's `sans-serif` among them) and the default family resolve to
//! it, so a PNG looks the same on every machine.
//!
//! Text that could not be drawn (no font for it, or a character the font
//! lacks) is an error, never a PNG with the words silently missing.

use std::sync::Arc;

use resvg::tiny_skia::{IntRect, Pixmap, Transform};
use resvg::usvg::{self, Group, Node, fontdb, roxmltree};

/// The font, as kept in the repository.
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
/// Its family name, what every family the SVG names resolves to.
pub const FONT_FAMILY: &str = "DejaVu Sans";

/// A font database holding only [`FONT`], with every generic family
/// pointing at it.
pub fn fonts() -> fontdb::Database {
    let mut db = fontdb::Database::new();
    db.load_font_source(fontdb::Source::Binary(Arc::new(FONT)));
    db.set_sans_serif_family(FONT_FAMILY);
    db.set_serif_family(FONT_FAMILY);
    db.set_monospace_family(FONT_FAMILY);
    db.set_cursive_family(FONT_FAMILY);
    db.set_fantasy_family(FONT_FAMILY);
    db
}

/// `svg` rendered to PNG bytes at its own size (one pixel per unit).
pub fn render(svg: &str) -> Result<Vec<u8>, String> {
    render_with(svg, fonts())
}

/// [`render`] with the fonts of `db`.
fn render_with(svg: &str, db: fontdb::Database) -> Result<Vec<u8>, String> {
    let tree = parse(svg, db)?;
    let written = texts_written(svg)?;
    let drawn = texts_drawn(tree.root())?;
    if drawn < written {
        return Err(format!(
            "{} of the chart's {written} texts could not be drawn (no font for them)",
            written - drawn
        ));
    }
    draw(&tree)?
        .encode_png()
        .map_err(|e| format!("encoding the PNG: {e}"))
}

/// `svg` parsed with the fonts of `db`, its texts laid out as glyphs
/// (a text no font of `db` can draw is left out).
fn parse(svg: &str, db: fontdb::Database) -> Result<usvg::Tree, String> {
    let options = usvg::Options {
        font_family: FONT_FAMILY.to_string(),
        fontdb: Arc::new(db),
        ..usvg::Options::default()
    };
    usvg::Tree::from_str(svg, &options).map_err(|e| format!("reading the SVG: {e}"))
}

/// `tree` drawn on a pixmap of its size.
fn draw(tree: &usvg::Tree) -> Result<Pixmap, String> {
    let size = tree.size().to_int_size();
    let mut pixmap = Pixmap::new(size.width(), size.height())
        .ok_or_else(|| format!("an SVG of size {}x{}", size.width(), size.height()))?;
    resvg::render(tree, Transform::identity(), &mut pixmap.as_mut());
    Ok(pixmap)
}

/// How many `<text>` elements with something to show `svg` has.
fn texts_written(svg: &str) -> Result<usize, String> {
    let doc = roxmltree::Document::parse(svg).map_err(|e| format!("reading the SVG: {e}"))?;
    Ok(doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter(|n| {
            let text: String = n.descendants().filter_map(|d| d.text()).collect();
            !text.trim().is_empty()
        })
        .count())
}

/// How many texts of `group` (and below) were laid out; an error for a
/// character the font has no glyph for.
fn texts_drawn(group: &Group) -> Result<usize, String> {
    let mut drawn = 0;
    for node in group.children() {
        match node {
            Node::Group(g) => drawn += texts_drawn(g)?,
            Node::Text(text) => {
                let glyphs = text.layouted().iter().flat_map(|s| &s.positioned_glyphs);
                for glyph in glyphs.clone() {
                    if glyph.id.0 == 0 && !glyph.text.trim().is_empty() {
                        return Err(format!(
                            "the chart's text has {:?}, which font {FONT_FAMILY} cannot draw",
                            glyph.text
                        ));
                    }
                }
                if glyphs.count() > 0 {
                    drawn += 1;
                }
            }
            Node::Path(_) | Node::Image(_) => {}
        }
    }
    Ok(drawn)
}

/// How many pixels of the PNG `png` in `region` (x, y, width, height) are
/// dark (each of red, green and blue under 100, opaque): where text and
/// black lines were drawn on the white background.
pub fn dark_pixels(
    png: &[u8],
    (x, y, width, height): (i32, i32, u32, u32),
) -> Result<usize, String> {
    let pixmap = Pixmap::decode_png(png).map_err(|e| format!("reading the PNG: {e}"))?;
    let region = IntRect::from_xywh(x, y, width, height)
        .ok_or_else(|| format!("an empty region {width}x{height}"))?;
    let region = pixmap
        .clone_rect(region)
        .ok_or_else(|| "the region lies outside the PNG".to_string())?;
    Ok(region
        .pixels()
        .iter()
        .filter(|p| p.alpha() == 255 && p.red() < 100 && p.green() < 100 && p.blue() < 100)
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::document::Svg;

    /// A chart of nothing but its title.
    fn titled(title: &str) -> String {
        let mut svg = Svg::new(300.0, 60.0);
        svg.title(0.0, title);
        svg.finish()
    }

    /// The title's region: the top 24 pixels.
    const TITLE: (i32, i32, u32, u32) = (0, 0, 300, 24);

    #[test]
    fn the_title_is_drawn_with_the_font_and_missing_without_it() {
        let svg = titled("kernel-cpu: time over the previous version");
        let png = render(&svg).unwrap();
        let with_font = dark_pixels(&png, TITLE).unwrap();
        assert!(with_font > 100, "{with_font} dark pixels");
        // The same check fails on a drawing without the font: the title
        // is left out, so no dark pixel; and render() refuses it.
        let bare = parse(&svg, fontdb::Database::new()).unwrap();
        let bare = draw(&bare).unwrap().encode_png().unwrap();
        assert_eq!(dark_pixels(&bare, TITLE).unwrap(), 0);
        let err = render_with(&svg, fontdb::Database::new()).unwrap_err();
        assert!(err.contains("texts could not be drawn"), "{err}");
    }

    #[test]
    fn a_character_the_font_lacks_is_an_error() {
        // A Linear B syllable: not in DejaVu Sans.
        let err = render(&titled("kernel \u{10000}")).unwrap_err();
        assert!(err.contains("cannot draw"), "{err}");
    }

    #[test]
    fn the_png_has_the_svg_size() {
        let png = render(&titled("t")).unwrap();
        let pixmap = Pixmap::decode_png(&png).unwrap();
        assert_eq!((pixmap.width(), pixmap.height()), (300, 60));
    }
}
