//! [`BulkStore::verify`](vellum_core::BulkStore::verify) of a memory store: its structures fed
//! to the shared [`Checker`]. Memory has no checksums and no engine check of its own, so a
//! problem found here is a bug in this provider (an index that drifted from its records).

use vellum_core::verify::{Checker, Fact, Index, Report};

use crate::database::Database;

/// Progress is reported every this many records (and at the end).
const PROGRESS_EVERY: u64 = 4096;

impl Database {
    /// Feeds every record, every entry of the indexes (all of [`Index::ALL`]) and the counters
    /// to a [`Checker`] and returns its report.
    pub(crate) fn verify(&self, progress: &mut dyn FnMut(u64)) -> Report {
        let mut checker = Checker::new(&Index::ALL);
        let mut tick = |c: &Checker| {
            if c.read().is_multiple_of(PROGRESS_EVERY) {
                progress(c.read());
            }
        };
        self.events.verify(&mut checker, &mut tick);
        self.queue.verify(&mut checker, &mut tick);
        for _ in 0..self.aggregates.len() + self.processes.len() + self.offsets.len() {
            checker.fact(Fact::Record);
            tick(&checker);
        }
        let counters = self.counters();
        checker.fact(Fact::Counters {
            next_offset: counters.next_offset,
            next_sequence: counters.next_sequence,
        });
        progress(checker.read());
        checker.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use vellum_core::time::Micros;
    use vellum_core::{
        AggregateMetaData, Batch, BulkStore, Envelope, Identity, Operation, Persister, ProcessInstance,
        Provider, QueueMessage, Result,
    };

    use crate::{MemoryProvider, MemoryStore};

    /// Runs a future that never waits (every memory store future is ready at once).
    fn block_on<F: Future>(f: F) -> F::Output {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut f = std::pin::pin!(f);
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    fn envelope(id: &str, ty: &str, handler: &str, instance: &str) -> Envelope {
        Envelope {
            message_id: id.into(),
            portable_name: ty.into(),
            source_handler: Some(Identity::new(handler, format!("{handler}-key"))),
            source_instance_id: instance.into(),
            ..Envelope::default()
        }
    }

    fn queued(envelope: Envelope, micros: u64) -> Operation {
        let next_attempt_at = UNIX_EPOCH + Duration::from_micros(micros);
        Operation::SaveQueueMessage(QueueMessage { revision: 0, failure_count: 0, next_attempt_at, envelope })
    }

    /// A store with every kind of record: events of two types from two sources, a command,
    /// a process with a timeout, an aggregate and a consumer offset.
    fn store() -> Result<MemoryStore> {
        block_on(async {
            let store = MemoryProvider::new().open("app").await?;
            let mut timeout = envelope("t-1", "Deadline", "review", "r-1");
            timeout.scheduled_for = "2030-01-01T00:00:00Z".into();
            let ops = vec![
                Operation::SaveEvent(envelope("e-0", "Opened", "account", "a-1")),
                Operation::SaveEvent(envelope("e-1", "Deposited", "account", "a-1")),
                Operation::SaveEvent(envelope("e-2", "Opened", "account", "a-2")),
                Operation::SaveAggregateMetaData(AggregateMetaData {
                    last_event_id: "e-2".into(),
                    ..AggregateMetaData::new("account", "a-1")
                }),
                queued(envelope("c-1", "Deposit", "api", ""), 20),
                queued(timeout, 10),
                Operation::SaveProcessInstance(ProcessInstance::new("review", "r-1")),
                Operation::SaveOffset { application_key: "other".into(), current_offset: 0, next_offset: 4 },
            ];
            store.persist(Batch::from(ops)).await?;
            Ok(store)
        })
    }

    fn verify(store: &MemoryStore) -> Result<(Vec<String>, u64)> {
        let mut last = 0;
        let report = block_on(store.verify(&mut |n| last = n))?;
        assert_eq!(last, report.records, "the last progress is every record (none is damaged)");
        Ok((report.problems.iter().map(ToString::to_string).collect(), report.records))
    }

    #[test]
    fn a_store_verifies_clean() -> Result<()> {
        let store = store()?;
        let report = block_on(store.verify(&mut |_| {}))?;
        assert!(report.is_clean(), "{:?}", report.problems);
        let stats = block_on(store.stats())?;
        assert_eq!(report.records, stats.total());
        // Three entries per event, one per message in queue order, one timeout.
        assert_eq!(report.index_entries, 3 * 3 + 2 + 1);
        assert_eq!(report.engine_check, None);
        assert_eq!(verify(&store)?, (vec![], 8));
        Ok(())
    }

    #[test]
    fn index_damage_is_reported_where_it_is() -> Result<()> {
        let store = store()?;
        store.write()?.events.by_type_mut().get_mut("Opened").expect("Opened events").retain(|&o| o != 2);
        store.write()?.events.ids_mut().insert("e-1".into(), 7);
        let order = store.write()?.queue.order_mut().pop_first().expect("a queued message");
        let (problems, _) = verify(&store)?;
        assert_eq!(
            problems,
            [
                "event at offset 2: missing from the events_by_type index: no entry (\"Opened\", 2)",
                "event_ids index entry (\"e-1\", 7): does not match: the event with message ID \"e-1\" is at offset 1",
                "queue message \"t-1\": missing from the queue_order index: no entry (10 µs, 1, \"t-1\")",
            ]
        );
        assert_eq!(order, (Micros(10), 1, "t-1".to_owned()));
        Ok(())
    }

    #[test]
    fn counter_damage_is_reported() -> Result<()> {
        let store = store()?;
        store.write()?.queue.set_next_sequence(1);
        let (problems, _) = verify(&store)?;
        assert_eq!(
            problems,
            ["queue message \"t-1\": its enqueue sequence 1 is not below the counters' next_sequence 1"]
        );
        Ok(())
    }

    #[test]
    fn a_closed_store_does_not_verify() -> Result<()> {
        let store = store()?;
        block_on(vellum_core::DataStore::close(&store))?;
        let closed = block_on(store.verify(&mut |_| {}));
        assert!(matches!(closed, Err(vellum_core::Error::Closed)), "{closed:?}");
        Ok(())
    }
}
