//! The one-statement commit of a simple group (only events, aggregates and consumer offsets):
//! its writes, the counters and the checks of the state the group assumed, as data-modifying
//! CTEs of one statement in its own transaction.
//!
//! The checks ride on the writes wherever a write can fail when its assumption does not hold:
//! the counter update matches only the counters this writer left; a row the group assumed
//! absent (an event's message ID, a new aggregate, a first consumer offset) is a plain insert,
//! which a stored row fails with a unique violation; a row it assumed at some revision is an
//! update that matches only that revision, and the statement counts what they matched. Only
//! keys the group assumed something of but does not write are probed. Parts a group does not
//! need are left out, so a statement touches only the tables it writes: each combination of
//! parts (a [`Shape`]) is its own prepared statement, made when first needed.
//!
//! A check that does not hold divides by zero ([`DIVISION_BY_ZERO`](super::sql::DIVISION_BY_ZERO);
//! an insert of a row assumed absent fails with a unique violation), which takes back
//! everything the statement did; the caller then reads the stored state and plans again.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use tokio_postgres::types::ToSql;
use vellum_core::provider::Counters;

use super::sql::{events_probe, offsets_probe, revision_probe};
use super::writer::{Expected, Writes};
use crate::schema::to_db;
use crate::sums::write as sum;

/// Which parts a simple group's statement has, and which of its write parts have exactly one
/// row; its bits key the writer's prepared statements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct Shape(u16);

impl Shape {
    const EVENTS: u16 = 1;
    const NEW_AGGREGATES: u16 = 1 << 1;
    const AGGREGATE_UPDATES: u16 = 1 << 2;
    const NEW_OFFSETS: u16 = 1 << 3;
    const OFFSET_UPDATES: u16 = 1 << 4;
    const EVENT_PROBES: u16 = 1 << 5;
    const AGGREGATE_PROBES: u16 = 1 << 6;
    const OFFSET_PROBES: u16 = 1 << 7;
    /// A write part's bit shifted by this says it has one row.
    const ONE_ROW: u32 = 8;

    fn has(self, part: u16) -> bool {
        self.0 & part != 0
    }

    /// Whether write part `part` has one row (scalar parameters), not several (arrays).
    fn one(self, part: u16) -> bool {
        self.0 & (part << Self::ONE_ROW) != 0
    }

    /// With write part `part` if it has `rows` rows.
    fn with(self, part: u16, rows: usize) -> Self {
        match rows {
            0 => self,
            1 => Self(self.0 | part | part << Self::ONE_ROW),
            _ => Self(self.0 | part),
        }
    }

    /// Every shape there is: any set of parts, each write part with one row or several.
    #[cfg(test)]
    pub(super) fn all() -> impl Iterator<Item = Self> {
        const WRITES: u16 = 0x1f;
        (0..=u16::from(u8::MAX)).flat_map(|parts| {
            let one_rows = parts & WRITES;
            // Every subset of the write parts present takes one row.
            (0..=one_rows).filter(move |ones| ones & !one_rows == 0).map(move |ones| Self(parts | ones << 8))
        })
    }

    /// The statement text of this shape over tables in `s`. Its parameters are numbered in the
    /// order [`Simple::params`] lists them: `$1` the app key, `$2, $3` the counters this writer
    /// left, `$4..$6` the new counters and their checksum, then each part's columns in turn.
    #[allow(clippy::many_single_char_names)] // one letter per column, as in the parameter lists
    pub(super) fn text(self, s: &str) -> String {
        let mut p = Params(7);
        let mut ctes = vec![format!(
            "ct AS (UPDATE {s}.vellum_app SET next_offset = $4, next_sequence = $5, checksum = $6 \
             WHERE app_key = $1 AND next_offset = $2 AND next_sequence = $3 RETURNING 1)"
        )];
        let mut checks = vec!["EXISTS (SELECT 1 FROM ct)".to_owned()];
        let mut notify = String::new();
        if self.has(Self::EVENTS) {
            let [o, m, n, h, i, e, c, ch] = p.take();
            let rows = Rows::new(
                self.one(Self::EVENTS),
                &[
                    (o, "bigint"),
                    (m, "text"),
                    (n, "text"),
                    (h, "text"),
                    (i, "text"),
                    (e, "bytea"),
                    (c, "bigint"),
                ],
            );
            ctes.push(format!(
                "ev AS (INSERT INTO {s}.vellum_event (app_key, event_offset, message_id, portable_name, \
                 handler_key, instance_id, envelope, checksum) {})",
                rows.insert()
            ));
            // Evaluated once, after the checks' division; delivered to the listeners only if
            // the statement's transaction commits.
            notify = format!(", pg_notify(${ch}::text, '')");
        }
        if self.has(Self::NEW_AGGREGATES) {
            let [h, i, r, l, c] = p.take();
            let rows = Rows::new(
                self.one(Self::NEW_AGGREGATES),
                &[(h, "text"), (i, "text"), (r, "bigint"), (l, "text"), (c, "bigint")],
            );
            ctes.push(format!(
                "agi AS (INSERT INTO {s}.vellum_aggregate (app_key, handler_key, instance_id, revision, \
                 last_event_id, checksum) {})",
                rows.insert()
            ));
        }
        if self.has(Self::AGGREGATE_UPDATES) {
            let [h, i, x, r, l, c] = p.take();
            let rows = Rows::new(
                self.one(Self::AGGREGATE_UPDATES),
                &[(h, "text"), (i, "text"), (x, "bigint"), (r, "bigint"), (l, "text"), (c, "bigint")],
            );
            ctes.push(format!(
                "agu AS (UPDATE {s}.vellum_aggregate t SET revision = {}, last_event_id = {}, checksum = {}{} \
                 WHERE t.app_key = $1 AND t.handler_key = {} AND t.instance_id = {} AND t.revision = {} \
                 RETURNING 1)",
                rows.get(r),
                rows.get(l),
                rows.get(c),
                rows.from(),
                rows.get(h),
                rows.get(i),
                rows.get(x),
            ));
            checks.push(format!("(SELECT count(*) FROM agu) = {}", rows.count()));
        }
        if self.has(Self::NEW_OFFSETS) {
            let [src, v, c] = p.take();
            let rows = Rows::new(self.one(Self::NEW_OFFSETS), &[(src, "text"), (v, "bigint"), (c, "bigint")]);
            ctes.push(format!(
                "osi AS (INSERT INTO {s}.vellum_offset (app_key, source_app_key, next_offset, checksum) {})",
                rows.insert()
            ));
        }
        if self.has(Self::OFFSET_UPDATES) {
            let [src, x, v, c] = p.take();
            let rows = Rows::new(
                self.one(Self::OFFSET_UPDATES),
                &[(src, "text"), (x, "bigint"), (v, "bigint"), (c, "bigint")],
            );
            ctes.push(format!(
                "osu AS (UPDATE {s}.vellum_offset t SET next_offset = {}, checksum = {}{} \
                 WHERE t.app_key = $1 AND t.source_app_key = {} AND t.next_offset = {} RETURNING 1)",
                rows.get(v),
                rows.get(c),
                rows.from(),
                rows.get(src),
                rows.get(x),
            ));
            checks.push(format!("(SELECT count(*) FROM osu) = {}", rows.count()));
        }
        if self.has(Self::EVENT_PROBES) {
            let [m] = p.take();
            checks.push(events_probe(s, m));
        }
        if self.has(Self::AGGREGATE_PROBES) {
            let [h, ..] = p.take::<3>();
            checks.push(revision_probe(s, "vellum_aggregate", h));
        }
        if self.has(Self::OFFSET_PROBES) {
            let [src, _] = p.take();
            checks.push(offsets_probe(s, src));
        }
        // A failed check divides by zero: a plain expression, where a PL/pgSQL raise (the
        // pipelined path's `vellum_expect`) re-initialises its expressions in every transaction
        // and cost a lone batch about 0.03 ms of server time. Nothing else here divides.
        format!("WITH {} SELECT 1 / coalesce({}, FALSE)::int{notify}", ctes.join(", "), checks.join(" AND "))
    }
}

/// The rows of a write part: one row of scalar parameters, or parallel arrays unnested as
/// `u(c<n>, ...)`. One row is the lone batch's case and the cheaper one by far: a plain
/// `VALUES` row (or an `UPDATE` matching on parameters) plans no scan at all, where a function
/// scan materialises its rows; with `UNNEST` a one-event batch's statement took about 0.035 ms
/// more server time, and with `SELECT ... FROM (VALUES ...)`, and a notification in a CTE of its
/// own, about 0.012 ms more than now.
struct Rows {
    one: bool,
    /// Each column's parameter number and SQL type.
    columns: Vec<(u32, &'static str)>,
}

impl Rows {
    fn new(one: bool, columns: &[(u32, &'static str)]) -> Self {
        Self { one, columns: columns.to_vec() }
    }

    /// The value of the column in parameter `n`, within a row.
    fn get(&self, n: u32) -> String {
        if self.one {
            let ty = self.columns.iter().find(|(c, _)| *c == n).map(|(_, ty)| *ty);
            debug_assert!(ty.is_some(), "parameter ${n} is not a column of this part");
            format!("${n}::{}", ty.unwrap_or("text"))
        } else {
            format!("u.c{n}")
        }
    }

    /// What an `INSERT` of the app key and these rows takes after its column list.
    fn insert(&self) -> String {
        if self.one {
            let values = self.columns.iter().map(|&(n, _)| self.get(n)).collect::<Vec<_>>();
            format!("VALUES ($1::text, {})", values.join(", "))
        } else {
            format!("SELECT $1::text, u.*{}", self.from())
        }
    }

    /// The `FROM` item an `UPDATE` of many rows joins (nothing for one row).
    fn from(&self) -> String {
        if self.one {
            return String::new();
        }
        let arrays = self.columns.iter().map(|(n, ty)| format!("${n}::{ty}[]")).collect::<Vec<_>>();
        let names = self.columns.iter().map(|(n, _)| format!("c{n}")).collect::<Vec<_>>();
        format!(" FROM UNNEST({}) AS u({})", arrays.join(", "), names.join(", "))
    }

    /// How many rows there are: the length of the first column, which in every part that is
    /// counted (the updates) is a text key.
    fn count(&self) -> String {
        match self.columns.first() {
            Some((first, _)) if !self.one => format!("cardinality(${first}::text[])"),
            _ => "1".to_owned(),
        }
    }
}

/// Hands each written row to `place` with what the group assumed of its key (0: absent) and
/// returns the assumed keys no row writes, with what was assumed of them; `None` if a row's
/// key was not assumed at all.
fn split<K: Copy + Eq + Hash, R>(
    assumed: impl Iterator<Item = (K, i64)>,
    rows: impl Iterator<Item = (K, R)>,
    mut place: impl FnMut(K, i64, R),
) -> Option<Vec<(K, i64)>> {
    let mut assumed: HashMap<K, i64> = assumed.collect();
    for (key, row) in rows {
        place(key, assumed.remove(&key)?, row);
    }
    Some(assumed.into_iter().collect())
}

/// Parameter `values` as the part expects it: its one value or the whole array.
fn column<T>(one: bool, values: &Vec<T>) -> &(dyn ToSql + Sync)
where
    T: ToSql + Sync,
    Vec<T>: ToSql + Sync,
{
    match values.first() {
        Some(value) if one => value,
        _ => values,
    }
}

/// Hands out parameter numbers in order.
struct Params(u32);

impl Params {
    fn take<const N: usize>(&mut self) -> [u32; N] {
        std::array::from_fn(|_| {
            self.0 += 1;
            self.0 - 1
        })
    }
}

/// A simple group's statement: its shape and its parameter values.
pub(super) struct Simple<'a> {
    pub(super) shape: Shape,
    app: &'a str,
    channel: &'a str,
    counters: [i64; 5],
    writes: &'a Writes<'a>,
    new_aggregates: Columns<'a>,
    aggregate_updates: Columns<'a>,
    aggregate_probes: Columns<'a>,
    new_offsets: Columns<'a>,
    offset_updates: Columns<'a>,
    offset_probes: Columns<'a>,
    /// Event IDs the group assumed absent and does not write (its inserts check the others).
    event_probes: Vec<&'a str>,
}

/// Rows of one part, as column arrays: aggregates fill `keys`/`instances`, offsets only
/// `keys`; `expected` is what the group assumed stored, the rest what it writes.
#[derive(Default)]
struct Columns<'a> {
    keys: Vec<&'a str>,
    instances: Vec<&'a str>,
    expected: Vec<i64>,
    values: Vec<i64>,
    last_ids: Vec<&'a str>,
    sums: Vec<i64>,
}

impl<'a> Simple<'a> {
    /// The statement committing `writes` (leaving the counters at `after`) if the state is the
    /// one `expected` describes. `None` if a write's key is missing from `expected`, which
    /// planning never produces.
    pub(super) fn new(
        app: &'a str,
        channel: &'a str,
        writes: &'a Writes<'a>,
        after: Counters,
        expected: &'a Expected<'a>,
    ) -> Option<Self> {
        let before = expected.counters;
        let counters = [
            to_db(before.next_offset),
            to_db(before.next_sequence),
            to_db(after.next_offset),
            to_db(after.next_sequence),
            sum::counters(app, after.next_offset, after.next_sequence),
        ];
        let mut simple = Simple {
            shape: Shape::default(),
            app,
            channel,
            counters,
            writes,
            new_aggregates: Columns::default(),
            aggregate_updates: Columns::default(),
            aggregate_probes: Columns::default(),
            new_offsets: Columns::default(),
            offset_updates: Columns::default(),
            offset_probes: Columns::default(),
            event_probes: Vec::new(),
        };
        simple.split_aggregates(expected)?;
        simple.split_offsets(expected)?;
        // Written IDs are distinct and all expected, so equal counts mean none is left.
        if writes.events.ids.len() != expected.events.len() {
            let written: HashSet<&str> = writes.events.ids.iter().copied().collect();
            simple.event_probes =
                expected.events.iter().copied().filter(|id| !written.contains(id)).collect();
        }
        // Probes always take arrays: as far as the shape goes, they have many rows.
        let many = |rows: usize| if rows == 0 { 0 } else { rows.max(2) };
        simple.shape = Shape::default()
            .with(Shape::EVENTS, writes.events.ids.len())
            .with(Shape::NEW_AGGREGATES, simple.new_aggregates.keys.len())
            .with(Shape::AGGREGATE_UPDATES, simple.aggregate_updates.keys.len())
            .with(Shape::NEW_OFFSETS, simple.new_offsets.keys.len())
            .with(Shape::OFFSET_UPDATES, simple.offset_updates.keys.len())
            .with(Shape::EVENT_PROBES, many(simple.event_probes.len()))
            .with(Shape::AGGREGATE_PROBES, many(simple.aggregate_probes.keys.len()))
            .with(Shape::OFFSET_PROBES, many(simple.offset_probes.keys.len()));
        Some(simple)
    }

    /// Each written aggregate as an insert (assumed absent) or an update of the assumed
    /// revision; assumed aggregates the group does not write, as probes.
    fn split_aggregates(&mut self, expected: &'a Expected<'a>) -> Option<()> {
        let assumed = expected
            .agg_h
            .iter()
            .copied()
            .zip(expected.agg_i.iter().copied())
            .zip(expected.agg_r.iter().copied());
        let a = &self.writes.aggregates;
        let rows = a
            .handlers
            .iter()
            .copied()
            .zip(a.instances.iter().copied())
            .zip(a.revisions.iter().zip(&a.last_ids).zip(&a.sums));
        let (new, updates) = (&mut self.new_aggregates, &mut self.aggregate_updates);
        let unwritten = split(assumed, rows, |(h, i), was, ((&revision, &last_id), &row_sum)| {
            let part = if was == 0 { &mut *new } else { &mut *updates };
            part.keys.push(h);
            part.instances.push(i);
            part.expected.push(was);
            part.values.push(revision);
            part.last_ids.push(last_id);
            part.sums.push(row_sum);
        })?;
        for ((h, i), r) in unwritten {
            self.aggregate_probes.keys.push(h);
            self.aggregate_probes.instances.push(i);
            self.aggregate_probes.expected.push(r);
        }
        Some(())
    }

    /// Each written consumer offset as an insert (assumed absent, 0) or an update of the
    /// assumed offset; assumed offsets the group does not write, as probes.
    fn split_offsets(&mut self, expected: &'a Expected<'a>) -> Option<()> {
        let assumed = expected.offset_src.iter().copied().zip(expected.offset_r.iter().copied());
        let o = &self.writes.offsets;
        let rows = o.sources.iter().copied().zip(o.values.iter().zip(&o.sums));
        let (new, updates) = (&mut self.new_offsets, &mut self.offset_updates);
        let unwritten = split(assumed, rows, |src, was, (&value, &row_sum)| {
            let part = if was == 0 { &mut *new } else { &mut *updates };
            part.keys.push(src);
            part.expected.push(was);
            part.values.push(value);
            part.sums.push(row_sum);
        })?;
        for (src, r) in unwritten {
            self.offset_probes.keys.push(src);
            self.offset_probes.expected.push(r);
        }
        Some(())
    }

    /// The parameter values, in the order [`Shape::text`] numbers them.
    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let shape = self.shape;
        let mut p: Vec<&(dyn ToSql + Sync)> = vec![&self.app];
        p.extend(self.counters.iter().map(|c| c as &(dyn ToSql + Sync)));
        if shape.has(Shape::EVENTS) {
            let (e, one) = (&self.writes.events, shape.one(Shape::EVENTS));
            p.extend([
                column(one, &e.offsets),
                column(one, &e.ids),
                column(one, &e.names),
                column(one, &e.handlers),
                column(one, &e.instances),
                column(one, &e.envelopes),
                column(one, &e.sums),
                &self.channel,
            ]);
        }
        if shape.has(Shape::NEW_AGGREGATES) {
            let (a, one) = (&self.new_aggregates, shape.one(Shape::NEW_AGGREGATES));
            p.extend([
                column(one, &a.keys),
                column(one, &a.instances),
                column(one, &a.values),
                column(one, &a.last_ids),
                column(one, &a.sums),
            ]);
        }
        if shape.has(Shape::AGGREGATE_UPDATES) {
            let (a, one) = (&self.aggregate_updates, shape.one(Shape::AGGREGATE_UPDATES));
            p.extend([
                column(one, &a.keys),
                column(one, &a.instances),
                column(one, &a.expected),
                column(one, &a.values),
                column(one, &a.last_ids),
                column(one, &a.sums),
            ]);
        }
        if shape.has(Shape::NEW_OFFSETS) {
            let (o, one) = (&self.new_offsets, shape.one(Shape::NEW_OFFSETS));
            p.extend([column(one, &o.keys), column(one, &o.values), column(one, &o.sums)]);
        }
        if shape.has(Shape::OFFSET_UPDATES) {
            let (o, one) = (&self.offset_updates, shape.one(Shape::OFFSET_UPDATES));
            p.extend([
                column(one, &o.keys),
                column(one, &o.expected),
                column(one, &o.values),
                column(one, &o.sums),
            ]);
        }
        if shape.has(Shape::EVENT_PROBES) {
            p.push(&self.event_probes);
        }
        if shape.has(Shape::AGGREGATE_PROBES) {
            let a = &self.aggregate_probes;
            p.extend([&a.keys as &(dyn ToSql + Sync), &a.instances, &a.expected]);
        }
        if shape.has(Shape::OFFSET_PROBES) {
            let o = &self.offset_probes;
            p.extend([&o.keys as &(dyn ToSql + Sync), &o.expected]);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use vellum_core::provider::plan_group;
    use vellum_core::{AggregateMetaData, Batch, Envelope, Operation};

    use super::*;

    /// The parameter numbers a statement text names.
    fn named(text: &str) -> std::collections::BTreeSet<u32> {
        text.split('$')
            .skip(1)
            .filter_map(|t| t.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .collect()
    }

    fn event(id: &str) -> Operation {
        Operation::SaveEvent(Envelope {
            message_id: id.into(),
            portable_name: "T".into(),
            ..Envelope::default()
        })
    }

    fn aggregate(instance: &str, revision: u64) -> Operation {
        Operation::SaveAggregateMetaData(AggregateMetaData {
            revision,
            ..AggregateMetaData::new("h", instance)
        })
    }

    /// Plans `batches` against the state they assume and builds their statement.
    fn shape_of(batches: &[Batch], check: impl FnOnce(&Simple<'_>)) {
        let counters = Counters { next_offset: 7, next_sequence: 0 };
        let (mut snapshot, expected) = Expected::of(batches, counters);
        let planned = plan_group(batches, &mut snapshot, counters).expect("plan");
        let writes = Writes::of("app", &planned.plan.writes);
        let simple = Simple::new("app", "channel", &writes, planned.plan.after, &expected).expect("simple");
        let text = simple.shape.text("s");
        assert_eq!(named(&text), (1..=simple.params().len() as u32).collect(), "{text}");
        check(&simple);
    }

    #[test]
    fn a_lone_batch_takes_one_row_parts_and_no_probes() {
        let batches = [Batch::from(vec![event("m1"), aggregate("new", 0), aggregate("old", 4)])];
        shape_of(&batches, |simple| {
            let shape = simple.shape;
            for part in [Shape::EVENTS, Shape::NEW_AGGREGATES, Shape::AGGREGATE_UPDATES] {
                assert!(shape.has(part) && shape.one(part), "{shape:?}");
            }
            for part in
                [Shape::NEW_OFFSETS, Shape::OFFSET_UPDATES, Shape::EVENT_PROBES, Shape::AGGREGATE_PROBES]
            {
                assert!(!shape.has(part), "{shape:?}");
            }
            let text = shape.text("s");
            assert!(text.contains("VALUES") && !text.contains("UNNEST"), "{text}");
        });
    }

    /// A batch that fails against the assumed state writes nothing, so what it assumed is
    /// probed; the others' rows come as arrays.
    #[test]
    fn a_group_probes_what_a_failed_batch_assumed() {
        let batches = [
            Batch::from(vec![event("m1"), aggregate("a", 0)]),
            Batch::from(vec![event("m2"), aggregate("b", 0)]),
            // Its event duplicates the first batch's: it fails whole, and "c" is not written.
            Batch::from(vec![event("m1"), aggregate("c", 2)]),
        ];
        shape_of(&batches, |simple| {
            let shape = simple.shape;
            assert!(shape.has(Shape::EVENTS) && !shape.one(Shape::EVENTS), "{shape:?}");
            assert!(shape.has(Shape::NEW_AGGREGATES) && !shape.one(Shape::NEW_AGGREGATES), "{shape:?}");
            assert!(shape.has(Shape::AGGREGATE_PROBES), "{shape:?}");
            assert_eq!(simple.aggregate_probes.instances, ["c"]);
            assert_eq!(simple.aggregate_probes.expected, [2]);
            assert!(!shape.has(Shape::EVENT_PROBES), "m1 is written, so its insert checks it");
        });
    }

    /// Every parameter a shape's text names is one `params` supplies, and the other way round.
    #[test]
    fn each_shape_numbers_its_parameters_densely() {
        let counts = [
            (Shape::EVENTS, 8),
            (Shape::NEW_AGGREGATES, 5),
            (Shape::AGGREGATE_UPDATES, 6),
            (Shape::NEW_OFFSETS, 3),
            (Shape::OFFSET_UPDATES, 4),
            (Shape::EVENT_PROBES, 1),
            (Shape::AGGREGATE_PROBES, 3),
            (Shape::OFFSET_PROBES, 2),
        ];
        for shape in Shape::all() {
            let text = shape.text("s");
            let supplied =
                6 + counts.iter().filter(|(part, _)| shape.has(*part)).map(|(_, n)| n).sum::<u32>();
            assert_eq!(named(&text), (1..=supplied).collect(), "shape {:#018b}: {text}", shape.0);
        }
    }
}
