//! The process-wide cache of loaded models: nodes of one run share a model instead of loading it
//! per node. Loading one model never blocks users of another (each key has its own slot; the
//! map's lock is held only to find the slot), two callers asking for the same model at once load
//! it once, and the cache keeps at most `max_items` models and `max_bytes` of weights, evicting the
//! least recently used. An evicted model stays alive for as long as someone still holds it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

type Slot<V> = Arc<Mutex<Option<Arc<V>>>>;

struct Entry<V> {
    slot: Slot<V>,
    last_used: u64,
    bytes: usize,
}

pub struct LruCache<K, V> {
    max_items: usize,
    max_bytes: usize,
    inner: Mutex<Inner<K, V>>,
}

struct Inner<K, V> {
    map: HashMap<K, Entry<V>>,
    clock: u64,
}

impl<K: Eq + Hash + Clone, V> LruCache<K, V> {
    /// Bounds of at least one item: the model just loaded is always kept.
    pub fn new(max_items: usize, max_bytes: usize) -> Self {
        Self {
            max_items: max_items.max(1),
            max_bytes,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                clock: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached value of `key`, else `load()`'s (cached; `bytes` sizes it for the bound). A
    /// failed load caches nothing: the next caller tries again.
    pub fn get_or_load<E>(
        &self,
        key: &K,
        bytes: impl FnOnce(&V) -> usize,
        load: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        let slot = {
            let mut inner = self.lock();
            inner.clock += 1;
            let now = inner.clock;
            let e = inner.map.entry(key.clone()).or_insert_with(|| Entry {
                slot: Arc::default(),
                last_used: now,
                bytes: 0,
            });
            e.last_used = now;
            e.slot.clone()
        };
        // Only callers of this key wait here while it loads.
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = &*guard {
            return Ok(v.clone());
        }
        let v = Arc::new(load()?);
        *guard = Some(v.clone());
        drop(guard);
        let size = bytes(&v);
        let mut inner = self.lock();
        if let Some(e) = inner.map.get_mut(key) {
            e.bytes = size;
        }
        self.evict(&mut inner, key);
        Ok(v)
    }

    /// Drops the least recently used loaded entries (never `keep`) until both bounds hold.
    fn evict(&self, inner: &mut Inner<K, V>, keep: &K) {
        loop {
            let loaded: Vec<(&K, &Entry<V>)> = inner
                .map
                .iter()
                .filter(|(_, e)| e.bytes > 0 || Self::is_loaded(e))
                .collect();
            let bytes: usize = loaded.iter().map(|(_, e)| e.bytes).sum();
            if loaded.len() <= self.max_items && bytes <= self.max_bytes {
                return;
            }
            let victim = loaded
                .iter()
                .filter(|(k, _)| *k != keep)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| (*k).clone());
            match victim {
                Some(k) => {
                    inner.map.remove(&k);
                }
                None => return,
            }
        }
    }

    /// Loaded (a slot still loading is locked by its loader and is not counted).
    fn is_loaded(e: &Entry<V>) -> bool {
        e.slot.try_lock().map(|g| g.is_some()).unwrap_or(false)
    }

    /// Keys currently cached and loaded.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock()
            .map
            .values()
            .filter(|e| Self::is_loaded(e))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn loads_once_and_evicts_the_least_recently_used() {
        let cache: LruCache<&str, String> = LruCache::new(2, usize::MAX);
        let loads = AtomicUsize::new(0);
        let get = |k: &'static str| {
            cache
                .get_or_load::<()>(
                    &k,
                    |_| 1,
                    || {
                        loads.fetch_add(1, Ordering::SeqCst);
                        Ok(k.to_string())
                    },
                )
                .unwrap()
        };
        let a = get("a");
        get("b");
        get("a");
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        get("c"); // evicts b, the least recently used
        assert_eq!(cache.len(), 2);
        get("a");
        assert_eq!(loads.load(Ordering::SeqCst), 3, "a stayed cached");
        get("b");
        assert_eq!(loads.load(Ordering::SeqCst), 4, "b was evicted and reloads");
        assert_eq!(*a, "a", "an evicted value lives on with its holders");
    }

    #[test]
    fn the_byte_bound_evicts_and_a_failed_load_is_retried() {
        let cache: LruCache<u32, Vec<u8>> = LruCache::new(10, 100);
        cache
            .get_or_load::<()>(&1, |v| v.len(), || Ok(vec![0; 60]))
            .unwrap();
        cache
            .get_or_load::<()>(&2, |v| v.len(), || Ok(vec![0; 60]))
            .unwrap();
        assert_eq!(cache.len(), 1, "120 bytes > 100: the older one goes");
        assert!(cache.get_or_load(&3, |v| v.len(), || Err("boom")).is_err());
        let v = cache
            .get_or_load::<()>(&3, |v| v.len(), || Ok(vec![1]))
            .unwrap();
        assert_eq!(*v, vec![1]);
    }

    #[test]
    fn loading_one_key_does_not_block_another() {
        let cache: Arc<LruCache<u32, u32>> = Arc::new(LruCache::new(4, usize::MAX));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let c = cache.clone();
        let slow = std::thread::spawn(move || {
            c.get_or_load::<()>(
                &1,
                |_| 1,
                || {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok(1)
                },
            )
            .unwrap()
        });
        started_rx.recv().unwrap();
        // Key 1 is mid-load; key 2 must load without waiting for it.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let c = cache.clone();
        std::thread::spawn(move || {
            done_tx
                .send(*c.get_or_load::<()>(&2, |_| 1, || Ok(2)).unwrap())
                .unwrap()
        });
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)), Ok(2));
        release_tx.send(()).unwrap();
        assert_eq!(*slow.join().unwrap(), 1);
    }
}
