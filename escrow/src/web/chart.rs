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

/// One stacked part of every column: a label (the legend), a value per column, and whether it
/// counts as a problem (drawn in warm colours).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Series {
    pub label: String,
    pub values: Vec<i64>,
    pub problem: bool,
}

/// Fills for the stacked series, in order: the first "good" series is blue, problems get
/// distinct warm colours (all at least 3:1 against white, WCAG's non-text contrast).
const GOOD: &[&str] = &["#0b5394", "#38761d"];
const PROBLEM: &[&str] = &["#a4161a", "#b45f06", "#741b47", "#5b5b5b"];

const COL_PLOT_H: i64 = 180;
const COL_TOP: i64 = 10;
const COL_LEFT: i64 = 44;
const COL_W: i64 = 22;
const COL_GAP: i64 = 4;

/// A stacked column chart (one column per label, e.g. per hour), with a y-axis maximum, the hour
/// labels under the columns and a legend that names each colour, as one `<svg>` element. Every
/// column carries a `<title>` with its numbers, so the values are readable without colour.
pub fn columns(id: &str, title: &str, labels: &[String], series: &[Series]) -> String {
    let n = i64::try_from(labels.len()).unwrap_or(0);
    let totals: Vec<i64> = (0..labels.len())
        .map(|i| {
            series
                .iter()
                .map(|s| s.values.get(i).copied().unwrap_or(0).max(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    let legend_rows = i64::try_from(series.len()).unwrap_or(0);
    let width = COL_LEFT + n * (COL_W + COL_GAP) + 10;
    let height = COL_TOP + COL_PLOT_H + 24 + legend_rows * 20 + 6;
    let id = xml_escape(id);
    let base = COL_TOP + COL_PLOT_H;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"{id}\" role=\"img\" aria-labelledby=\"{id}-t\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\"><title id=\"{id}-t\">{}</title>\
         <line x1=\"{COL_LEFT}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#1a1a1a\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"12\" fill=\"#1a1a1a\">{max}</text>\
         <text x=\"{}\" y=\"{base}\" text-anchor=\"end\" font-size=\"12\" fill=\"#1a1a1a\">0</text>",
        xml_escape(title),
        width - 10,
        COL_LEFT - 6,
        COL_TOP + 10,
        COL_LEFT - 6,
    );
    let mut colours = Vec::with_capacity(series.len());
    let (mut good, mut bad) = (0, 0);
    for se in series {
        let c = if se.problem {
            bad += 1;
            PROBLEM[(bad - 1) % PROBLEM.len()]
        } else {
            good += 1;
            GOOD[(good - 1) % GOOD.len()]
        };
        colours.push(c);
    }
    for (i, label) in labels.iter().enumerate() {
        let x = COL_LEFT + i64::try_from(i).unwrap_or(0) * (COL_W + COL_GAP) + COL_GAP;
        let mut y = base;
        let mut tip = format!(
            "{}: {}",
            xml_escape(label),
            totals.get(i).copied().unwrap_or(0)
        );
        s.push_str("<g>");
        for (se, colour) in series.iter().zip(&colours) {
            let v = se.values.get(i).copied().unwrap_or(0).max(0);
            if v == 0 {
                continue;
            }
            tip.push_str(&format!(", {} {v}", xml_escape(&se.label)));
            let h = (v * COL_PLOT_H / max).max(2);
            y -= h;
            s.push_str(&format!(
                "<rect x=\"{x}\" y=\"{y}\" width=\"{COL_W}\" height=\"{h}\" fill=\"{colour}\"/>"
            ));
        }
        s.push_str(&format!("<title>{tip}</title></g>"));
        // Every other hour labelled, so the labels never overlap.
        if i % 2 == 0 {
            s.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\" fill=\"#1a1a1a\">{}</text>",
                x + COL_W / 2,
                base + 16,
                xml_escape(label)
            ));
        }
    }
    for (k, (se, colour)) in series.iter().zip(&colours).enumerate() {
        let y = base + 28 + i64::try_from(k).unwrap_or(0) * 20;
        s.push_str(&format!(
            "<rect x=\"{COL_LEFT}\" y=\"{y}\" width=\"14\" height=\"14\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"13\" fill=\"#1a1a1a\">{}</text>",
            COL_LEFT + 20,
            y + 12,
            xml_escape(&se.label)
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

    #[test]
    fn columns_stack_by_series_and_name_every_colour() {
        let labels: Vec<String> = ["00", "01", "02"].iter().map(|s| (*s).to_owned()).collect();
        let svg = columns(
            "u",
            "per <hour>",
            &labels,
            &[
                Series {
                    label: "answered".into(),
                    values: vec![4, 0, 2],
                    problem: false,
                },
                Series {
                    label: "unknown_certificate".into(),
                    values: vec![4, 0, 0],
                    problem: true,
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("per &lt;hour&gt;"));
        // The tallest column (8) fills the plot: two parts of 90 each.
        assert_eq!(svg.matches("height=\"90\"").count(), 2, "{svg}");
        assert!(
            svg.contains("<title>00: 8, answered 4, unknown_certificate 4</title>"),
            "{svg}"
        );
        assert!(svg.contains("<title>01: 0</title>"));
        assert!(svg.contains(">answered</text>") && svg.contains(">unknown_certificate</text>"));
        assert!(svg.contains("#a4161a"));
        assert!(!svg.contains("<script"));
    }
}
