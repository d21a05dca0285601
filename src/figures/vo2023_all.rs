//! `vo2023-all`: every von Oswald et al. 2023 figure we reproduce, in one command, and
//! `reports/vo2023.md`, an index of their reports with each figure's checks.

use std::time::Instant;

use serde_json::{json, Value};

use super::{find, FigureOptions};
use crate::io::{write_atomic, write_json_atomic};

pub const NAME: &str = "vo2023-all";

/// In order; shared models are trained once (later figures reuse the runs).
pub const MEMBERS: &[&str] = &[
    "vo2023-fig2",
    "vo2023-fig3",
    "vo2023-fig6",
    "vo2023-fig7",
    "vo2023-fig9",
    "vo2023-fig10",
    "vo2023-fig12",
    "vo2023-fig14",
];

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<Value> {
    let start = Instant::now();
    let mut rows = Vec::new();
    for name in MEMBERS {
        let figure = find(name)?;
        let o = FigureOptions { seeds: Some(opts.seeds.unwrap_or(figure.default_seeds)), ..opts.clone() };
        let summary = (figure.run)(&o)?;
        rows.push(json!({
            "figure": name,
            "about": figure.about,
            "seeds": o.seed_count(),
            "wall_seconds": summary["wall_seconds"],
            "gates": summary["gates"],
        }));
    }
    let summary =
        json!({ "figure": NAME, "quick": opts.quick, "wall_seconds": start.elapsed().as_secs_f64(), "figures": rows });
    write_json_atomic(&opts.reports_root.join("vo2023.json"), &summary)?;
    write_atomic(&opts.reports_root.join("vo2023.md"), markdown(&summary).as_bytes())?;
    Ok(summary)
}

fn markdown(s: &Value) -> String {
    let mut out = String::from("# von Oswald et al. 2023: every reproduced figure\n\n");
    out += &format!(
        "Made by `icl-lab reproduce {NAME}{}` in {:.0} s. Each report puts our numbers beside the paper's and says where \
         they differ.\n\n| figure | what | seeds | checks |\n|---|---|---|---|\n",
        if s["quick"] == true { " --quick" } else { "" },
        s["wall_seconds"].as_f64().unwrap_or(f64::NAN)
    );
    for r in s["figures"].as_array().into_iter().flatten() {
        let name = r["figure"].as_str().unwrap_or("?");
        let checks = r["gates"].as_object().map_or("—".to_string(), |g| {
            if g.is_empty() {
                "—".into()
            } else {
                g.iter()
                    .map(|(k, v)| format!("{k}: {}", if v.as_bool() == Some(true) { "pass" } else { "FAIL" }))
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        });
        out +=
            &format!("| [{name}]({name}.md) | {} | {} | {checks} |\n", r["about"].as_str().unwrap_or(""), r["seeds"]);
    }
    out += "\nNot yet reproduced: Fig. 4 (sine regression), Figs. 8, 11, 13, 15, 16.\n";
    out
}
