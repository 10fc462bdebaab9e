//! The in-memory state backend: one ordered map per declared state.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::backend::{Entries, StateBackend, StateDescriptor, StateError, StateResult, TableId};

/// State in ordered maps on the heap; snapshots copy it whole.
#[derive(Debug)]
pub struct MemoryBackend {
    descriptors: Vec<StateDescriptor>,
    tables: Vec<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryBackend {
    /// An empty backend with these states.
    pub fn new(descriptors: Vec<StateDescriptor>) -> Self {
        let tables = descriptors.iter().map(|_| BTreeMap::new()).collect();
        MemoryBackend { descriptors, tables }
    }

    fn table(&self, t: TableId) -> StateResult<&BTreeMap<Vec<u8>, Vec<u8>>> {
        self.tables.get(t).ok_or_else(|| StateError::new(format!("no state table {t}")))
    }
}

impl StateBackend for MemoryBackend {
    fn descriptors(&self) -> &[StateDescriptor] {
        &self.descriptors
    }

    fn get(&self, table: TableId, key: &[u8]) -> StateResult<Option<Vec<u8>>> {
        Ok(self.table(table)?.get(key).cloned())
    }

    fn put(&mut self, table: TableId, key: &[u8], value: &[u8]) -> StateResult<()> {
        self.table(table)?;
        // An existing entry is overwritten in place: no new key, and the value's buffer reused.
        match self.tables[table].get_mut(key) {
            Some(v) => {
                v.clear();
                v.extend_from_slice(value);
            }
            None => {
                self.tables[table].insert(key.to_vec(), value.to_vec());
            }
        }
        Ok(())
    }

    fn delete(&mut self, table: TableId, key: &[u8]) -> StateResult<()> {
        self.table(table)?;
        self.tables[table].remove(key);
        Ok(())
    }

    fn range<'a>(&'a self, table: TableId, start: &[u8], end: Option<&[u8]>) -> StateResult<Entries<'a>> {
        let upper = match end {
            Some(e) if e <= start => return Ok(Box::new(std::iter::empty())),
            Some(e) => Bound::Excluded(e),
            None => Bound::Unbounded,
        };
        let iter = self.table(table)?.range::<[u8], _>((Bound::Included(start), upper));
        Ok(Box::new(iter.map(|(k, v)| Ok((k.clone(), v.clone())))))
    }
}
