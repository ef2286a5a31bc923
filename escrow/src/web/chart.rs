//! Server-rendered SVG charts (no script, no external library): horizontal bars with their values
//! written out, so the chart reads without colour and screen readers get the same numbers.

/// One bar: label, value, and whether it counts as a problem (drawn in the warning colour).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bar {
    pub label: String,
    pub value: i64,
    pub problem: bool,
}

const WIDTH: i64 = 640;
const LABEL_W: i64 = 230;
const BAR_H: i64 = 26;
const GAP: i64 = 10;

/// Escapes text for SVG/XML content and attributes.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A horizontal bar chart titled `title`, as one `<svg>` element (safe to embed: every text is
/// escaped).
pub fn bars(id: &str, title: &str, bars: &[Bar]) -> String {
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1);
    let height = GAP + (BAR_H + GAP) * i64::try_from(bars.len()).unwrap_or(0);
    let span = WIDTH - LABEL_W - 70;
    let id = xml_escape(id);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"{id}\" role=\"img\" aria-labelledby=\"{id}-t\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\"><title id=\"{id}-t\">{}</title>",
        xml_escape(title)
    );
    for (i, b) in bars.iter().enumerate() {
        let y = GAP + (BAR_H + GAP) * i64::try_from(i).unwrap_or(0);
        let w = if b.value <= 0 {
            0
        } else {
            (b.value * span / max).max(2)
        };
        let fill = if b.problem && b.value > 0 {
            "#a4161a"
        } else {
            "#0b5394"
        };
        let ty = y + BAR_H / 2 + 5;
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{ty}\" text-anchor=\"end\" font-size=\"14\" fill=\"#1a1a1a\">{}</text>\
             <rect x=\"{LABEL_W}\" y=\"{y}\" width=\"{w}\" height=\"{BAR_H}\" fill=\"{fill}\"/>\
             <text x=\"{}\" y=\"{ty}\" font-size=\"14\" fill=\"#1a1a1a\">{}</text>",
            LABEL_W - 8,
            xml_escape(&b.label),
            LABEL_W + w + 6,
            b.value
        ));
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(label: &str, value: i64, problem: bool) -> Bar {
        Bar {
            label: label.into(),
            value,
            problem,
        }
    }

    #[test]
    fn bars_scale_to_the_largest_and_escape_labels() {
        let svg = bars(
            "c",
            "T<1>",
            &[bar("a&b", 10, false), bar("z", 5, true), bar("n", 0, true)],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("<title id=\"c-t\">T&lt;1&gt;</title>"));
        assert!(svg.contains(">a&amp;b</text>"));
        assert!(
            svg.contains("width=\"340\""),
            "largest bar spans the plot: {svg}"
        );
        assert!(svg.contains("width=\"170\""), "half value, half width");
        assert!(svg.contains("width=\"0\""), "zero stays empty");
        assert!(
            svg.contains("#a4161a"),
            "problem bars in the warning colour"
        );
        assert!(!svg.contains("<script"));
    }

    #[test]
    fn empty_and_all_zero_charts_render() {
        assert!(bars("e", "empty", &[]).ends_with("</svg>"));
        assert!(bars("z", "zero", &[bar("a", 0, false)]).contains("width=\"0\""));
    }
}
