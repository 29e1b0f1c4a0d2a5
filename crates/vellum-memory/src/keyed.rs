//! A map keyed by two strings that can be looked up with two `&str` without allocating.

use std::collections::HashMap;

/// `(handler key, instance id) -> V`, as nested maps.
#[derive(Debug)]
pub(crate) struct Keyed2<V> {
    outer: HashMap<String, HashMap<String, V>>,
}

impl<V> Default for Keyed2<V> {
    fn default() -> Self {
        Self { outer: HashMap::new() }
    }
}

impl<V> Keyed2<V> {
    pub(crate) fn get(&self, a: &str, b: &str) -> Option<&V> {
        self.outer.get(a)?.get(b)
    }

    pub(crate) fn get_mut(&mut self, a: &str, b: &str) -> Option<&mut V> {
        self.outer.get_mut(a)?.get_mut(b)
    }

    pub(crate) fn get_mut_or_default(&mut self, a: &str, b: &str) -> &mut V
    where
        V: Default,
    {
        // Look up before inserting so the common case (both keys present) allocates nothing.
        if !self.outer.contains_key(a) {
            self.outer.insert(a.to_owned(), HashMap::new());
        }
        let inner = self.outer.get_mut(a).expect("inserted above");
        if !inner.contains_key(b) {
            inner.insert(b.to_owned(), V::default());
        }
        inner.get_mut(b).expect("inserted above")
    }

    pub(crate) fn insert(&mut self, a: &str, b: &str, value: V) {
        match self.outer.get_mut(a) {
            Some(inner) => {
                inner.insert(b.to_owned(), value);
            }
            None => {
                self.outer.entry(a.to_owned()).or_default().insert(b.to_owned(), value);
            }
        }
    }

    pub(crate) fn remove(&mut self, a: &str, b: &str) -> Option<V> {
        let inner = self.outer.get_mut(a)?;
        let value = inner.remove(b);
        if inner.is_empty() {
            self.outer.remove(a);
        }
        value
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str, &V)> {
        self.outer.iter().flat_map(|(a, inner)| inner.iter().map(move |(b, v)| (a.as_str(), b.as_str(), v)))
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.outer.values().map(HashMap::len).sum()
    }
}
