//! `kubectl netslo matrix` (pure part): a check's grid as a terminal table, the columns named
//! in a legend above it so that long endpoint names do not stretch every row.

use std::fmt::Write as _;

use netslo_crds::v1alpha1::{ConnectivityMatrixStatus, MatrixCell, MatrixPhase, MatrixRows};

/// One cell as text: "1 (410us)", "0.9 (3.1ms) ✗", "-" when the source did not probe it.
fn cell_text(cell: &MatrixCell) -> String {
    let Some(ratio) = &cell.success_ratio else {
        return "-".to_owned();
    };
    let mut text = ratio.clone();
    if let Some(p99) = &cell.p99 {
        let _ = write!(text, " ({p99})");
    }
    if cell.failing == Some(true) {
        text.push_str(" ✗");
    }
    text
}

/// The grid as a table: a legend of the columns, then one line per source. `paint` colours
/// failing cells red and the others green (on a terminal only).
pub fn render(check: &str, status: &ConnectivityMatrixStatus, paint: bool) -> String {
    let mut out = String::new();
    if status.phase != Some(MatrixPhase::Ready) {
        let _ = writeln!(
            out,
            "no matrix for {check}: {}",
            status.message.as_deref().unwrap_or("no answer")
        );
        return out;
    }
    let rows_by = match status.rows_by {
        Some(MatrixRows::Zone) => "zone",
        _ => "node",
    };
    let _ = writeln!(
        out,
        "{check}: success ratio (p99) from each source {rows_by} to each destination, last hour; ✗ below the objective"
    );
    for (i, column) in status.columns.iter().enumerate() {
        let _ = writeln!(out, "  [{}] {column}", i + 1);
    }
    let header: Vec<String> = std::iter::once(format!("SOURCE {}", rows_by.to_uppercase()))
        .chain((1..=status.columns.len()).map(|i| format!("[{i}]")))
        .collect();
    let lines: Vec<Vec<(String, Option<bool>)>> = status
        .rows
        .iter()
        .map(|row| {
            std::iter::once((row.source.clone(), None))
                .chain(row.cells.iter().map(|c| {
                    (
                        cell_text(c),
                        c.success_ratio.as_ref().map(|_| c.failing == Some(true)),
                    )
                }))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            lines
                .iter()
                .filter_map(|l| l.get(i))
                .map(|(t, _)| t.chars().count())
                .chain(std::iter::once(header[i].chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let pad = |text: &str, width: usize| {
        let fill = width.saturating_sub(text.chars().count());
        format!("{text}{}", " ".repeat(fill))
    };
    let joined = |cells: Vec<String>| cells.join("  ").trim_end().to_owned();
    let _ = writeln!(
        out,
        "{}",
        joined(
            header
                .iter()
                .zip(&widths)
                .map(|(h, w)| pad(h, *w))
                .collect()
        )
    );
    for line in lines {
        let cells = line
            .iter()
            .zip(&widths)
            .map(|((text, failing), w)| {
                let padded = pad(text, *w);
                match (paint, failing) {
                    (true, Some(true)) => format!("\x1b[31m{padded}\x1b[0m"),
                    (true, Some(false)) => format!("\x1b[32m{padded}\x1b[0m"),
                    _ => padded,
                }
            })
            .collect();
        let _ = writeln!(out, "{}", joined(cells));
    }
    if let Some(message) = &status.message {
        let _ = writeln!(out, "{message}");
    }
    out
}

/// Whether any cell fails: `matrix` exits 3 then, like `wait` on a breach.
pub fn any_failing(status: &ConnectivityMatrixStatus) -> bool {
    status
        .rows
        .iter()
        .flat_map(|r| &r.cells)
        .any(|c| c.failing == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netslo_crds::v1alpha1::MatrixRow;

    fn cell(ratio: &str, p99: Option<&str>, failing: bool) -> MatrixCell {
        MatrixCell {
            success_ratio: Some(ratio.into()),
            p99: p99.map(str::to_owned),
            failing: Some(failing),
        }
    }

    #[test]
    fn the_grid_reads_as_a_table_with_failing_cells_marked() {
        let status = ConnectivityMatrixStatus {
            phase: Some(MatrixPhase::Ready),
            message: None,
            rows_by: Some(MatrixRows::Node),
            columns: vec![
                "api Pod 10.0.0.7:8080".into(),
                "api Pod 10.0.0.8:8080".into(),
            ],
            rows: vec![
                MatrixRow {
                    source: "node-a".into(),
                    cells: vec![cell("0", None, true), cell("1", Some("410us"), false)],
                },
                MatrixRow {
                    source: "node-bb".into(),
                    cells: vec![cell("1", Some("3.1ms"), false), MatrixCell::default()],
                },
            ],
            generated_at: None,
        };
        let expected = "\
shop/mesh: success ratio (p99) from each source node to each destination, last hour; ✗ below the objective
  [1] api Pod 10.0.0.7:8080
  [2] api Pod 10.0.0.8:8080
SOURCE NODE  [1]        [2]
node-a       0 ✗        1 (410us)
node-bb      1 (3.1ms)  -
";
        assert_eq!(render("shop/mesh", &status, false), expected);
        assert!(any_failing(&status));
        let painted = render("shop/mesh", &status, true);
        assert!(painted.contains("\x1b[31m0 ✗"), "{painted}");
        assert!(painted.contains("\x1b[32m1 (410us)"), "{painted}");
        // A cell nobody probed is neither red nor green.
        assert!(painted.contains("  -\n"), "{painted}");
    }

    #[test]
    fn no_grid_says_why() {
        let status = ConnectivityMatrixStatus {
            phase: Some(MatrixPhase::Refused),
            message: Some("no results of connectivitycheck shop/mesh yet".into()),
            ..ConnectivityMatrixStatus::default()
        };
        assert_eq!(
            render("shop/mesh", &status, false),
            "no matrix for shop/mesh: no results of connectivitycheck shop/mesh yet\n"
        );
        assert!(!any_failing(&status));
    }
}
