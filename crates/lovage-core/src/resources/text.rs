//! Resources written as text (`gpu=2,mem=0.5`), in milli-units. Dependency-free on purpose:
//! lovage-macros includes this very file (`#[path]`), so `#[task(resources = "...")]` fails
//! the build with the same rules and words as `--resources` and `parse_resources` at run time.

/// Milli-units in one unit: amounts are kept as whole milli-units so sums never drift.
pub(crate) const MILLI: u64 = 1000;

/// Most units of one resource (what a `u32` held before fractions came in).
pub(crate) const MAX_MILLI: u64 = u32::MAX as u64 * MILLI;

/// Parses a non-negative decimal amount with at most 3 decimals (`2`, `0.5`, `1.25`) into
/// milli-units. Zero parses; callers that need a positive amount check it.
pub(crate) fn parse_units(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!("{t:?} is negative (units are more than 0)"));
    }
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return Err(format!(
            "{t:?} is not a number of units (give e.g. gpu=2 or gpu=0.5)"
        ));
    }
    if frac.len() > 3 {
        return Err(format!(
            "{t:?} has more than 3 decimals (units are counted in thousandths)"
        ));
    }
    let too_many = || format!("{t:?} is too many units (at most {})", u32::MAX);
    let int = int.trim_start_matches('0');
    if int.len() > 10 {
        return Err(too_many());
    }
    let whole: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| too_many())?
    };
    let mut milli = whole * MILLI;
    let mut scale = MILLI / 10;
    for b in frac.bytes() {
        milli += u64::from(b - b'0') * scale;
        scale /= 10;
    }
    if milli > MAX_MILLI {
        return Err(too_many());
    }
    Ok(milli)
}

/// Why `name` is not a resource name (1–64 characters of `[A-Za-z0-9_.-]`: it becomes part
/// of a queue name), or None when it is one.
pub(crate) fn name_error(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    (!ok).then(|| {
        format!("resource name {name:?} is not 1-64 characters of letters, digits, '_', '.' or '-'")
    })
}

/// Why `milli` units of `name` are not an amount a task or a worker may give, or None.
pub(crate) fn amount_error(name: &str, milli: u64) -> Option<String> {
    if milli == 0 {
        Some(format!(
            "resource {name} needs more than 0 units (leave it out instead of 0)"
        ))
    } else if milli > MAX_MILLI {
        Some(format!(
            "resource {name}: too many units (at most {})",
            u32::MAX
        ))
    } else {
        None
    }
}

/// Parses `gpu=2, mem=0.5,fpga` (a bare name is 1 unit) into (name, milli-units) pairs in
/// the order given, every name and amount checked; empty text gives none.
pub(crate) fn parse_list(text: &str) -> Result<Vec<(String, u64)>, String> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, milli) = match part.split_once('=') {
            Some((n, u)) => (n.trim(), parse_units(u)?),
            None => (part, MILLI),
        };
        if let Some(e) = name_error(name).or_else(|| amount_error(name, milli)) {
            return Err(e);
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(format!("resource {name} is given twice"));
        }
        out.push((name.to_owned(), milli));
    }
    Ok(out)
}
