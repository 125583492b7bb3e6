use std::fmt;

use crate::yaml::Pos;

/// A problem with a pipeline file, found before anything runs. Always names the file,
/// and where it can, the line:column, the stage and the key.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    pub file: String,
    pub pos: Option<Pos>,
    pub stage: Option<String>,
    pub message: String,
}

impl SpecError {
    pub fn new(
        file: &str,
        pos: Option<Pos>,
        stage: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        SpecError {
            file: file.to_string(),
            pos,
            stage: stage.map(str::to_string),
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(p) = self.pos {
            write!(f, ":{p}")?;
        }
        write!(f, ": ")?;
        if let Some(s) = &self.stage {
            write!(f, "stage `{s}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecError {}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// ` (did you mean `x`?)` or nothing.
pub fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(word, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}
