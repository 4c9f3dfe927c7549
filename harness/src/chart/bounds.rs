//! The check that every text of a chart lies inside its image: each
//! `<text>` as [`super::document::Svg`] writes it, its extent estimated
//! (width: characters × font size × [`CHAR_WIDTH`]; height: the font size
//! above the baseline, a quarter of it below), against the `viewBox`.

use super::document::{CHAR_WIDTH, FONT_SIZE};

/// Each `<text>` of `svg` whose estimated extent leaves the viewBox, with
/// its box; an `svg` without a viewBox is one problem.
pub fn text_outside(svg: &str) -> Vec<String> {
    let Some((width, height)) = view_box(svg) else {
        return vec!["no viewBox=\"0 0 W H\" on the <svg> element".into()];
    };
    let mut problems = Vec::new();
    let mut rest = svg;
    while let Some(at) = rest.find("<text") {
        let element = &rest[at..];
        let Some(open_end) = element.find('>') else {
            break;
        };
        let attrs = &element[..open_end];
        let close = element.find("</text>").unwrap_or(open_end);
        let content = unescape(element.get(open_end + 1..close).unwrap_or(""));
        rest = &element[open_end + 1..];
        let x = attr(attrs, "x").unwrap_or(0.0);
        let y = attr(attrs, "y").unwrap_or(0.0);
        let size = attr(attrs, "font-size").unwrap_or(FONT_SIZE);
        let w = content.chars().count() as f64 * size * CHAR_WIDTH;
        let left = match attr_str(attrs, "text-anchor") {
            Some("middle") => x - w / 2.0,
            Some("end") => x - w,
            _ => x,
        };
        let (top, bottom) = (y - size, y + size / 4.0);
        if left < 0.0 || left + w > width || top < 0.0 || bottom > height {
            problems.push(format!(
                "{content:?} spans x {left:.1}..{:.1}, y {top:.1}..{bottom:.1}, \
                 outside 0..{width} x 0..{height}",
                left + w
            ));
        }
    }
    problems
}

fn view_box(svg: &str) -> Option<(f64, f64)> {
    let root = &svg[svg.find("<svg")?..];
    let root = &root[..root.find('>')?];
    let values: Vec<f64> = attr_str(root, "viewBox")?
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    match values[..] {
        [x, y, w, h] if x == 0.0 && y == 0.0 => Some((w, h)),
        _ => None,
    }
}

fn attr_str<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = attrs.find(&key)? + key.len();
    let len = attrs[start..].find('"')?;
    Some(&attrs[start..start + len])
}

fn attr(attrs: &str, name: &str) -> Option<f64> {
    attr_str(attrs, name)?.parse().ok()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::document::{Anchor, Svg};

    #[test]
    fn text_past_an_edge_is_found() {
        let inside = |svg: &mut Svg| {
            svg.text(10.0, 20.0, 12.0, Anchor::Start, "inside", "");
            svg.text(100.0, 50.0, 12.0, Anchor::Middle, "centred & fine", "");
            svg.text(190.0, 90.0, 12.0, Anchor::End, "end", "");
        };
        let mut good = Svg::new(200.0, 100.0);
        inside(&mut good);
        assert_eq!(text_outside(&good.finish()), Vec::<String>::new());
        // Past the right edge (the cut-off title), above the top, left.
        let mut svg = Svg::new(200.0, 100.0);
        inside(&mut svg);
        svg.text(150.0, 20.0, 15.0, Anchor::Start, "a title cut off", "");
        svg.text(10.0, 5.0, 12.0, Anchor::Start, "up", "");
        svg.text(20.0, 50.0, 12.0, Anchor::End, "left of it", "");
        let problems = text_outside(&svg.finish());
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].contains("a title cut off"), "{problems:#?}");
        assert_eq!(text_outside("<svg width=\"1\">").len(), 1);
    }
}
