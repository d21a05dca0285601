//! `vo2023-all`: every von Oswald et al. 2023 figure we reproduce, in one command, and
//! `reports/vo2023.md`, an index of the figure reports present (`icl-lab index` rebuilds it
//! after figures were run one at a time).

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use super::{find, FigureOptions};

pub const NAME: &str = "vo2023-all";

/// In order; shared models are trained once (later figures reuse the runs).
pub const MEMBERS: &[&str] = &[
    "vo2023-fig2",
    "vo2023-fig3",
    "vo2023-fig4",
    "vo2023-fig5",
    "vo2023-fig6",
    "vo2023-fig7",
    "vo2023-fig8",
    "vo2023-fig9",
    "vo2023-fig10",
    "vo2023-fig1",
    "vo2023-fig12",
    "vo2023-fig11",
    "vo2023-fig13",
    "vo2023-fig14",
    "vo2023-fig15",
    "vo2023-fig16",
];

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<Value> {
    let start = Instant::now();
    for name in MEMBERS {
        let figure = find(name)?;
        let o = FigureOptions { seeds: Some(opts.seeds.unwrap_or(figure.default_seeds)), ..opts.clone() };
        (figure.run)(&o)?;
    }
    let mut index = write_index(&opts.reports_root)?;
    index["wall_seconds"] = json!(start.elapsed().as_secs_f64());
    Ok(index)
}

/// Writes `reports/vo2023.{md,json}` from the figure reports in `reports_root`.
pub fn write_index(reports_root: &Path) -> anyhow::Result<Value> {
    let mut rows = Vec::new();
    for name in MEMBERS {
        let path = reports_root.join(format!("{name}.json"));
        let figure = find(name)?;
        let report = match std::fs::read(&path) {
            Err(_) => None,
            Ok(bytes) => match figure_report(name, &bytes) {
                Ok(r) => Some(r),
                Err(why) => {
                    crate::warnln!("{}: left out of the index ({why})", path.display());
                    rows.push(json!({ "figure": name, "about": figure.about, "present": false, "unreadable": why }));
                    continue;
                }
            },
        };
        rows.push(match report {
            Some(r) => json!({
                "figure": name,
                "about": figure.about,
                "present": true,
                "quick": r["quick"].as_bool().unwrap_or(false),
                "seeds": r["seeds"].as_array().map_or_else(|| r["seeds"].clone(), |a| json!(a.len())),
                "gates": r["gates"],
            }),
            None => json!({ "figure": name, "about": figure.about, "present": false }),
        });
    }
    let index = json!({ "figure": NAME, "figures": rows });
    super::write_report(reports_root, "vo2023", &index, &markdown(&index))?;
    Ok(index)
}

/// `bytes` as the report of figure `name`: a JSON object that names the figure (`figure`), whose
/// `quick` is a boolean where present and whose `seeds` a count or a list; anything else (another
/// figure's report, `[]`, `{"name": 5}`) is not listed as a report.
fn figure_report(name: &str, bytes: &[u8]) -> Result<Value, String> {
    let r: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let obj = r.as_object().ok_or("not a JSON object")?;
    if obj.get("figure").and_then(Value::as_str) != Some(name) {
        return Err(format!(
            "not the report of {name} (its `figure` field is {})",
            obj.get("figure").unwrap_or(&Value::Null)
        ));
    }
    if obj.get("quick").is_some_and(|q| !q.is_boolean()) {
        return Err("`quick` is not true or false".into());
    }
    if !obj.get("seeds").is_some_and(|s| s.is_u64() || s.is_array()) {
        return Err("`seeds` is neither a count nor a list".into());
    }
    Ok(r)
}

fn markdown(s: &Value) -> String {
    let mut out = String::from("# von Oswald et al. 2023: every reproduced figure\n\n");
    out +=
        "Each report puts our numbers beside the paper's and says where they differ. `icl-lab reproduce vo2023-all` \
            makes all of them; `--quick` variants (shortened training) say so in their reports and here.\n\n\
            | figure | what | setting | seeds | checks |\n|---|---|---|---|---|\n";
    for r in s["figures"].as_array().into_iter().flatten() {
        let name = r["figure"].as_str().unwrap_or("?");
        let about = r["about"].as_str().unwrap_or("");
        if r["present"] != true {
            let state = if r["unreadable"].is_string() { "report unreadable" } else { "not run yet" };
            out += &format!("| {name} | {about} | {state} | — | — |\n");
            continue;
        }
        let checks = r["gates"].as_object().filter(|g| !g.is_empty()).map_or("—".to_string(), |g| {
            g.iter()
                .map(|(k, v)| format!("{k}: {}", if v.as_bool() == Some(true) { "pass" } else { "FAIL" }))
                .collect::<Vec<_>>()
                .join("; ")
        });
        let setting = if r["quick"] == true { "quick" } else { "full" };
        out += &format!("| [{name}]({name}.md) | {about} | {setting} | {} | {checks} |\n", r["seeds"]);
    }
    out += "\nFig. 1's left panel is a diagram. Fig. 8 is GPU-scale at the paper's setting: its committed report is the quick CPU variant unless it says otherwise.\n";
    out
}
