//! `vellum demo`: an engine-shaped workload, as a Dogma engine would drive a store.
//!
//! A bank application: `Deposit` commands wait on the queue; handlers (the workers) take one
//! each, and the account aggregate records `FundsDeposited` in the same batch that removes the
//! command (conflicting, and retrying, when two workers hit one account). Every 7th command
//! fails once first and is retried after a back-off. Every 10th deposit is also flagged: a
//! review process starts, schedules a timeout, and ends when the timeout fires. A projection
//! consumes `FundsDeposited` and advances its offset.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Mutex;
use vellum::bulk::BulkStore;
use vellum::time::rfc3339;
use vellum::{
    AggregateMetaData, AggregateRepository, AnyStore, Batch, DataStore, Envelope, Error, EventRepository,
    Identity, OffsetRepository, Operation, Packet, PersistResult, Persister, ProcessInstance, Provider,
    QueueMessage, Result,
};

use crate::cli::DemoArgs;
use crate::report::{Latencies, Table, bytes, millis, rate, store_size};

const ACCOUNT: &str = "demo.account";
const REVIEW: &str = "demo.review";
/// The application's name in envelopes (its key is the store's application key).
const APP_NAME: &str = "demo";
const DEPOSIT: &str = "demo.Deposit";
const DEPOSITED: &str = "demo.FundsDeposited";
const FLAGGED: &str = "demo.DepositFlagged";
const REVIEW_DUE: &str = "demo.ReviewDue";
/// How long a failed command waits before its retry, and a review before its timeout.
const BACKOFF: Duration = Duration::from_millis(2);
const REVIEW_TIME: Duration = Duration::from_millis(5);

/// Runs the demo and prints its summary.
pub async fn run(args: DemoArgs) -> Result<()> {
    let provider = vellum::connect(&args.target.url)?;
    let store = provider.open(&args.target.app).await?;
    let before = store.stats().await?;
    let demo = Arc::new(Demo::new(store, &args));
    let started = Instant::now();
    let result = demo.drive(&args).await;
    let elapsed = started.elapsed();
    demo.bar.finish_and_clear();
    let summary = match result {
        Ok(()) => demo.summary(&args, &provider, before, elapsed).await,
        Err(e) => Err(e),
    };
    let closed = demo.store.close().await;
    let summary = summary?;
    closed?;
    print!("{summary}");
    Ok(())
}

/// The shared state of one demo run.
struct Demo {
    store: AnyStore,
    /// Makes message IDs unique to this run, so the demo can run again on the same store.
    run: String,
    accounts: u64,
    bar: ProgressBar,
    latencies: Mutex<Latencies>,
    batches: AtomicU64,
    conflicts: AtomicU64,
    retries: AtomicU64,
    reviews: AtomicU64,
    consumed: AtomicU64,
    handlers_done: AtomicBool,
}

impl Demo {
    fn new(store: AnyStore, args: &DemoArgs) -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        let bar = ProgressBar::new(args.commands);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} [{bar:40}] {pos}/{len} commands ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(format!("demo on {}", args.target.url));
        Self {
            store,
            run: format!("{nanos:x}"),
            accounts: args.accounts.max(1),
            bar,
            latencies: Mutex::new(Latencies::default()),
            batches: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            reviews: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            handlers_done: AtomicBool::new(false),
        }
    }

    /// Enqueues the commands, then runs the handlers and the projection to completion.
    async fn drive(self: &Arc<Self>, args: &DemoArgs) -> Result<()> {
        let now = SystemTime::now();
        for chunk in (0..args.commands).collect::<Vec<_>>().chunks(100) {
            let ops =
                chunk.iter().map(|i| Operation::SaveQueueMessage(queued(0, self.command(*i), now))).collect();
            self.persist(ops).await?;
        }
        let projection = tokio::spawn(Arc::clone(self).project());
        let workers = args.workers.max(1) as u64;
        let handlers: Vec<_> = (0..workers)
            .map(|w| {
                let demo = Arc::clone(self);
                let commands = (w..args.commands).step_by(workers as usize);
                tokio::spawn(async move {
                    for i in commands {
                        demo.handle(i).await?;
                        demo.bar.inc(1);
                    }
                    Ok::<_, Error>(())
                })
            })
            .collect();
        let mut outcome = Ok(());
        for handler in handlers {
            let result = handler.await.map_err(|e| Error::storage("a demo handler task failed", e));
            outcome = outcome.and(result.and_then(|r| r));
        }
        self.handlers_done.store(true, Ordering::Release);
        let projected = projection.await.map_err(|e| Error::storage("the demo projection task failed", e));
        outcome.and(projected.and_then(|r| r))
    }

    /// Persists a batch, recording its latency and, if it commits, counting it.
    async fn persist(&self, ops: Vec<Operation>) -> Result<PersistResult> {
        let started = Instant::now();
        let result = self.store.persist(Batch::from(ops)).await;
        self.latencies.lock().await.add(started.elapsed());
        if result.is_ok() {
            self.batches.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Handles command `i` as an engine would, including its failure, retry and review.
    async fn handle(&self, i: u64) -> Result<()> {
        let mut command = queued(1, self.command(i), SystemTime::now());
        if i % 7 == 3 {
            // The first attempt fails: record the failure and back off, as the engine does.
            command.failure_count = 1;
            command.next_attempt_at = SystemTime::now() + BACKOFF;
            self.persist(vec![Operation::SaveQueueMessage(command.clone())]).await?;
            command.revision += 1;
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(BACKOFF).await;
        }
        // Scattered, so concurrent handlers sometimes hit one account (and conflict) as real
        // traffic does; a plain `i % accounts` would keep lock-stepped workers apart.
        let account = format!("account-{}", mix(i) % self.accounts);
        let flagged = i.is_multiple_of(10);
        loop {
            let meta = self.store.load_aggregate_meta_data(ACCOUNT, &account).await?;
            match self.deposit(i, &account, meta, &command, flagged).await {
                Err(e) if e.is_conflict() => {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                other => break other?,
            }
        }
        if flagged {
            self.review(i).await?;
        }
        Ok(())
    }

    /// The account aggregate handles the command: one batch records its events, updates its
    /// meta-data, removes the command and (when flagged) enqueues the event for the review.
    async fn deposit(
        &self,
        i: u64,
        account: &str,
        meta: AggregateMetaData,
        command: &QueueMessage,
        flagged: bool,
    ) -> Result<()> {
        let deposited = self.event(format!("{}-deposited-{i}", self.run), DEPOSITED, account);
        let mut meta = meta;
        meta.last_event_id.clone_from(&deposited.message_id);
        let mut ops = vec![
            Operation::SaveAggregateMetaData(meta.clone()),
            Operation::SaveEvent(deposited),
            Operation::RemoveQueueMessage(command.clone()),
        ];
        if flagged {
            let flag = self.event(format!("{}-flagged-{i}", self.run), FLAGGED, account);
            meta.last_event_id.clone_from(&flag.message_id);
            ops[0] = Operation::SaveAggregateMetaData(meta);
            ops.push(Operation::SaveEvent(flag.clone()));
            ops.push(Operation::SaveQueueMessage(queued(0, flag, SystemTime::now())));
        }
        self.persist(ops).await.map(drop)
    }

    /// The review process: starts on the flagged event, schedules a timeout, and ends itself
    /// when the timeout fires (removing the process and its own timeout in one batch).
    async fn review(&self, i: u64) -> Result<()> {
        let instance = format!("review-{}-{i}", self.run);
        // Removing the flagged event from the queue needs only its ID and revision.
        let flagged =
            queued(1, self.event(format!("{}-flagged-{i}", self.run), FLAGGED, ""), SystemTime::now());
        let packet = Packet::new("application/json; type=\"demo.Review\"", format!("{{\"deposit\":{i}}}"));
        let process = ProcessInstance { revision: 0, packet, ..ProcessInstance::new(REVIEW, &instance) };
        let due = SystemTime::now() + REVIEW_TIME;
        let timeout = queued(0, self.timeout(i, &instance, due), due);
        self.persist(vec![
            Operation::SaveProcessInstance(process.clone()),
            Operation::SaveQueueMessage(timeout.clone()),
            Operation::RemoveQueueMessage(flagged),
        ])
        .await?;
        tokio::time::sleep(REVIEW_TIME).await;
        let ended = ProcessInstance { revision: 1, ..process };
        self.persist(vec![
            Operation::RemoveProcessInstance(ended),
            Operation::RemoveQueueMessage(QueueMessage { revision: 1, ..timeout }),
        ])
        .await?;
        self.reviews.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The projection: reads `FundsDeposited` from its stored offset and advances the offset
    /// after each page, until the handlers are done and it has caught up.
    async fn project(self: Arc<Self>) -> Result<()> {
        let source = self.store.app_key().to_owned();
        loop {
            let done = self.handlers_done.load(Ordering::Acquire);
            let offset = self.store.load_offset(&source).await?;
            let mut cursor = self.store.load_events_by_type(&[DEPOSITED], offset).await?;
            let (mut next, mut seen) = (offset, 0u64);
            while let Some(event) = cursor.next().await? {
                next = event.offset + 1;
                seen += 1;
                if seen == 500 {
                    break;
                }
            }
            if seen > 0 {
                let op = Operation::SaveOffset {
                    application_key: source.clone(),
                    current_offset: offset,
                    next_offset: next,
                };
                self.persist(vec![op]).await?;
                self.consumed.fetch_add(seen, Ordering::Relaxed);
            } else if done {
                return Ok(());
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// A command comes from outside the application: no source handler.
    fn command(&self, i: u64) -> Envelope {
        let amount = i % 97 + 1;
        self.envelope(format!("{}-deposit-{i}", self.run), DEPOSIT, format!("{{\"amount\":{amount}}}"))
    }

    fn event(&self, id: String, portable_name: &str, account: &str) -> Envelope {
        let mut env = self.envelope(id, portable_name, "{}".to_owned());
        env.source_handler = Some(Identity::new("account", ACCOUNT));
        account.clone_into(&mut env.source_instance_id);
        env
    }

    fn timeout(&self, i: u64, instance: &str, due: SystemTime) -> Envelope {
        let mut env = self.envelope(format!("{}-review-due-{i}", self.run), REVIEW_DUE, "{}".to_owned());
        env.source_handler = Some(Identity::new("review", REVIEW));
        instance.clone_into(&mut env.source_instance_id);
        env.scheduled_for = rfc3339(due);
        env
    }

    fn envelope(&self, message_id: String, portable_name: &str, json: String) -> Envelope {
        Envelope {
            causation_id: message_id.clone(),
            correlation_id: message_id.clone(),
            message_id,
            source_application: Some(Identity::new(APP_NAME, self.store.app_key())),
            created_at: rfc3339(SystemTime::now()),
            description: portable_name.to_owned(),
            portable_name: portable_name.to_owned(),
            media_type: format!("application/json; type=\"{portable_name}\""),
            data: json.into_bytes(),
            ..Envelope::default()
        }
    }

    async fn summary(
        &self,
        args: &DemoArgs,
        provider: &vellum::AnyProvider,
        before: vellum::StoreStats,
        elapsed: Duration,
    ) -> Result<String> {
        let after = self.store.stats().await?;
        let mut latencies = self.latencies.lock().await.clone();
        let batches = self.batches.load(Ordering::Relaxed);
        let events = after.events - before.events;
        let mut t = Table::new(["", ""]);
        let n = |v: u64| v.to_string();
        t.row(["store".to_owned(), format!("{} (application {:?})", args.target.url, args.target.app)]);
        t.row(["commands handled".to_owned(), n(args.commands)]);
        t.row(["batches committed".to_owned(), n(batches)]);
        t.row(["events recorded".to_owned(), n(events)]);
        t.row(["conflicts retried".to_owned(), n(self.conflicts.load(Ordering::Relaxed))]);
        t.row(["failed attempts retried".to_owned(), n(self.retries.load(Ordering::Relaxed))]);
        t.row(["reviews started and ended".to_owned(), n(self.reviews.load(Ordering::Relaxed))]);
        t.row(["events projected".to_owned(), n(self.consumed.load(Ordering::Relaxed))]);
        t.row(["elapsed".to_owned(), format!("{:.2} s", elapsed.as_secs_f64())]);
        t.row([
            "throughput".to_owned(),
            format!("{:.0} batches/s, {:.0} events/s", rate(batches, elapsed), rate(events, elapsed)),
        ]);
        t.row([
            "persist latency".to_owned(),
            format!(
                "p50 {}, p99 {} ({} persists, {} workers)",
                millis(latencies.percentile(50)),
                millis(latencies.percentile(99)),
                latencies.len(),
                args.workers
            ),
        ]);
        t.row([
            "store now holds".to_owned(),
            format!(
                "{} events, {} aggregates, {} processes, {} queued, {} offsets",
                after.events, after.aggregates, after.processes, after.queue, after.offsets
            ),
        ]);
        if let Some(size) = store_size(provider, &args.target.app) {
            t.row(["store size".to_owned(), bytes(size)]);
        }
        Ok(format!("vellum demo finished\n{t}"))
    }
}

fn queued(revision: u64, envelope: Envelope, next_attempt_at: SystemTime) -> QueueMessage {
    QueueMessage { revision, failure_count: 0, next_attempt_at, envelope }
}

/// A cheap integer hash (splitmix64's finaliser).
fn mix(i: u64) -> u64 {
    let mut x = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
