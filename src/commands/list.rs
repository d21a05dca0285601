//! `icl-lab list`: List the registered tasks (with their parameters and default learners) and learners.
//!
//! The command's arguments (clap) and its body; what it computes lives in the library modules it calls.

pub fn run() -> anyhow::Result<()> {
    crate::learners::register();
    crate::outln!("tasks ([task] name = …; keys with their defaults):");
    for entry in icl_tasks::registry::entries() {
        let task = icl_tasks::build(&icl_tasks::TaskConfig::new(entry.name))?;
        let keys: Vec<String> = task.params().iter().map(|(k, v)| format!("{k} = {v}")).collect();
        let learners: Vec<String> = task.learners().iter().map(|l| l.label()).collect();
        crate::outln!("  {:<16} {}", entry.name, entry.about);
        crate::outln!("  {:<16} keys: {}", "", keys.join(", "));
        crate::outln!("  {:<16} learners: {}", "", learners.join(", "));
        let shifts: Vec<&str> = task.shifts().iter().map(|s| s.kind.name()).collect();
        crate::outln!("  {:<16} shifts (curve --shift): {}", "", shifts.join(", "));
    }
    crate::outln!("learners:");
    for f in icl_probes::learner::families() {
        crate::outln!("  {:<16} {}", f.name(), f.about());
    }
    Ok(())
}
