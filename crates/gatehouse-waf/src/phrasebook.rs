//! Every `@pm` phrase list of the rules in one automaton: a value several phrase rules
//! read is searched once for all of them (CRS reads each argument with about a dozen),
//! and only the rules whose phrases it holds run their own search for what matched.

use aho_corasick::AhoCorasick;
use std::collections::HashMap;

/// The phrase lists of the rules, numbered, in one case-insensitive automaton.
#[derive(Debug)]
pub(crate) struct Phrasebook {
    ac: AhoCorasick,
    /// Per pattern, the lists that hold it.
    owners: Vec<Vec<u32>>,
    lists: usize,
}

impl Phrasebook {
    /// The book of `lists` (list `k` is the `k`th given); `None` without phrases or when
    /// the automaton cannot be built (each rule then searches with its own).
    pub(crate) fn of<'a>(lists: impl IntoIterator<Item = &'a [String]>) -> Option<Self> {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut patterns: Vec<String> = Vec::new();
        let mut owners: Vec<Vec<u32>> = Vec::new();
        let mut count = 0;
        for (k, list) in lists.into_iter().enumerate() {
            count = k + 1;
            for phrase in list {
                // Without case, as the search is: one pattern per spelling.
                let at = *index.entry(phrase.to_ascii_lowercase()).or_insert_with(|| {
                    patterns.push(phrase.clone());
                    owners.push(Vec::new());
                    patterns.len() - 1
                });
                if owners[at].last() != Some(&(k as u32)) {
                    owners[at].push(k as u32);
                }
            }
        }
        if patterns.is_empty() {
            return None;
        }
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&patterns)
            .ok()?;
        Some(Phrasebook {
            ac,
            owners,
            lists: count,
        })
    }

    /// How many lists it holds (the length of an answer).
    pub(crate) fn lists(&self) -> usize {
        self.lists
    }

    /// Marks in `answer` (one flag per list) each list with a phrase in `value`.
    pub(crate) fn read(&self, value: &[u8], answer: &mut [bool]) {
        for m in self.ac.find_overlapping_iter(value) {
            for &k in &self.owners[m.pattern().as_usize()] {
                answer[k as usize] = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every list whose phrase appears, overlapping ones and any case included; a
    /// phrase two lists share marks both.
    #[test]
    fn each_list_with_a_phrase_in_the_value_is_marked() {
        let lists = [
            vec!["passwd".to_string(), "shadow".into()],
            vec!["WD".to_string()],
            vec!["Shadow".to_string(), "group".into()],
            vec!["absent".to_string()],
        ];
        let book = Phrasebook::of(lists.iter().map(Vec::as_slice)).unwrap();
        assert_eq!(book.lists(), 4);
        let answer = |v: &[u8]| {
            let mut a = vec![false; book.lists()];
            book.read(v, &mut a);
            a
        };
        assert_eq!(answer(b"/etc/PASSWD"), [true, true, false, false]);
        assert_eq!(answer(b"/etc/shadow"), [true, false, true, false]);
        assert_eq!(answer(b"nothing here"), [false; 4]);
        assert!(Phrasebook::of(std::iter::empty()).is_none());
    }
}
