fn main() {
    out_of_memory_is_one_line();
    std::process::exit(dartsif::cli::main());
}

/// libtorch reports an allocation that fails inside an operation (a step's activations, say) as
/// a panic of tch's wrapper. That is a user's sizing problem, not a bug: it becomes one line
/// naming the settings that size a step, and status 1 (checkpoints written so far are kept; under
/// MPI the launcher ends the other ranks). Every other panic keeps Rust's report.
fn out_of_memory_is_one_line() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        let oom = ["can't allocate memory", "out of memory", "Cannot allocate memory"];
        if oom.iter().any(|p| msg.contains(p)) {
            // "… you tried to allocate 33554432 bytes. …" (tch's error, newlines escaped).
            let what = msg
                .split("you tried to allocate ")
                .nth(1)
                .and_then(|t| t.split(' ').next()?.parse::<u64>().ok())
                .map(|b| format!("an allocation of {:.1} MiB failed", b as f64 / (1u64 << 20) as f64))
                .unwrap_or_else(|| "an allocation failed".into());
            eprintln!(
                "error: out of memory during the run ({what}): a smaller search.micro_batch or search.batch_size \
                 (select.batch_size, train.micro_batch) lowers the memory of a step"
            );
            std::process::exit(1);
        }
        default(info)
    }));
}
