#!/usr/bin/env node
// The peers' side of the benchmark: graphile-worker and pg-boss running
// scenario 2 (drain pre-enqueued no-op jobs) and scenario 3 (pickup latency)
// against the benchmark's server, with their recommended high-throughput
// settings.  Driven by bench.py; prints one JSON object on its last line.
//
//   node peers.js graphile-setup
//   node peers.js graphile-e2e  N
//   node peers.js graphile-pickup          (stdin "stop" ends it)
//   node peers.js pgboss-setup
//   node peers.js pgboss-e2e    N
//   node peers.js pgboss-pickup            (stdin "stop" ends it)
//   node peers.js pgboss-produce SECONDS RATE
//
// Connection: PGHOST (the socket directory), PGPORT, PGUSER; the database is
// PEER_DB.  Clocks: latencies use the system clock on both sides (the same
// machine); JS times come from performance.timeOrigin + performance.now().
'use strict';

const { performance } = require('node:perf_hooks');
const readline = require('node:readline');
const { Client } = require('pg');

const host = process.env.PGHOST;
const port = process.env.PGPORT || '5432';
const user = process.env.PGUSER || 'postgres';
const db = process.env.PEER_DB;
const connectionString =
  `postgres://${encodeURIComponent(user)}@/${db}?host=${encodeURIComponent(host)}&port=${port}`;

// graphile-worker's own performance-test settings (worker.graphile.org/docs/performance)
const GRAPHILE = {
  concurrency: 24,
  maxPoolSize: 25,
  localQueue: { size: 500 },
  completeJobBatchDelay: 0,
  failJobBatchDelay: 0,
  pollInterval: 2000
};
// pg-boss 10: no LISTEN; each worker fetches a batch, runs it, completes it in one
// statement, then waits out the polling interval (0.5 s is the minimum) even when
// it found work, so throughput <= workers * batchSize / 0.5 s: 8 * 1000 keeps that
// cap (16,000 jobs/s) above what this server sustains.
const PGBOSS = { workers: 8, batchSize: 1000, pollingIntervalSeconds: 0.5, poolMax: 10 };

const nowS = () => (performance.timeOrigin + performance.now()) / 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const silentLogger = () => {
  const { Logger } = require('graphile-worker');
  return new Logger(() => (level, message) => {
    if (level === 'error') process.stderr.write(`graphile: ${message}\n`);
  });
};

async function sql(text, params) {
  const c = new Client({ connectionString });
  await c.connect();
  try {
    return await c.query(text, params);
  } finally {
    await c.end();
  }
}

// Resolves when a line "stop" arrives on stdin (or stdin closes).
function stopSignal() {
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin });
    rl.on('line', (l) => { if (l.trim() === 'stop') { rl.close(); resolve(); } });
    rl.on('close', resolve);
  });
}

async function waitUntil(check, what, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// ---------------------------------------------------------------- graphile

const GRAPHILE_ADD_JOBS = `
select id from graphile_worker.add_jobs(
  array(select json_populate_recordset(null::graphile_worker.job_spec, $1::json)), false)`;

async function graphileSetup() {
  const { runMigrations } = require('graphile-worker');
  await runMigrations({ connectionString, logger: silentLogger() });
  emit({ ok: true, version: require('graphile-worker/package.json').version });
}

async function graphileRunner(taskList) {
  const { run } = require('graphile-worker');
  return await run({
    connectionString,
    concurrency: GRAPHILE.concurrency,
    maxPoolSize: GRAPHILE.maxPoolSize,
    pollInterval: GRAPHILE.pollInterval,
    noHandleSignals: true,
    logger: silentLogger(),
    taskList,
    preset: {
      worker: {
        localQueue: GRAPHILE.localQueue,
        completeJobBatchDelay: GRAPHILE.completeJobBatchDelay,
        failJobBatchDelay: GRAPHILE.failJobBatchDelay
      }
    }
  });
}

async function graphileE2e(n) {
  const c = new Client({ connectionString });
  await c.connect();
  await c.query('delete from graphile_worker._private_jobs');
  const spec = JSON.stringify(Array.from({ length: 1000 }, () => ({ identifier: 'noop', payload: {} })));
  for (let done = 0; done < n; done += 1000) {
    const k = Math.min(1000, n - done);
    await c.query(GRAPHILE_ADD_JOBS, [k === 1000 ? spec : JSON.stringify(JSON.parse(spec).slice(0, k))]);
  }
  await c.query('vacuum analyze graphile_worker._private_jobs');
  await c.query('checkpoint');

  let ran = 0;
  const t0 = nowS();
  const runner = await graphileRunner({ noop: async () => { ran++; } });
  await waitUntil(async () => ran >= n, 'graphile handlers', 600000);
  // completions are batched: done when the table is empty
  await waitUntil(async () =>
    (await c.query('select not exists (select 1 from graphile_worker._private_jobs) as e')).rows[0].e,
    'graphile completions', 600000);
  const seconds = nowS() - t0;
  await runner.stop();
  await c.end();
  emit({ jobs: n, seconds, jobs_per_s: n / seconds, settings: GRAPHILE });
}

async function graphilePickup() {
  await sql('delete from graphile_worker._private_jobs');
  const lat = [];
  const starts = [];
  const runner = await graphileRunner({
    pickup: async (payload) => {
      const now = nowS();
      lat.push((now - payload.t) * 1000);
      starts.push([payload.mark, now]);
    }
  });
  emit({ ready: true });
  await stopSignal();
  const c = new Client({ connectionString });
  await c.connect();
  await waitUntil(async () =>
    (await c.query('select not exists (select 1 from graphile_worker._private_jobs) as e')).rows[0].e,
    'graphile pickup jobs', 120000);
  await c.end();
  await runner.stop();
  emit({ latencies_ms: lat, starts, settings: GRAPHILE });
}

// ------------------------------------------------------------------ pg-boss

async function startBoss() {
  const PgBoss = require('pg-boss');
  const boss = new PgBoss({ connectionString, max: PGBOSS.poolMax });
  boss.on('error', (e) => process.stderr.write(`pg-boss: ${e.message}\n`));
  await boss.start();
  return boss;
}

async function pgbossSetup() {
  const boss = await startBoss();
  for (const q of ['noop', 'pickup']) {
    if (!(await boss.getQueue(q))) await boss.createQueue(q);
  }
  await boss.stop({ graceful: false, wait: true });
  emit({ ok: true, version: require('pg-boss/package.json').version });
}

const pgbossLeft = async (c, name) =>
  (await c.query(`select count(*)::int as n from pgboss.job where name = $1 and state < 'completed'`,
    [name])).rows[0].n;

async function pgbossE2e(n) {
  const boss = await startBoss();
  const c = new Client({ connectionString });
  await c.connect();
  await boss.purgeQueue('noop');
  await c.query(`delete from pgboss.job where name = 'noop'`);
  const batch = Array.from({ length: 1000 }, () => ({ name: 'noop', data: {} }));
  for (let done = 0; done < n; done += 1000) {
    await boss.insert(batch.slice(0, Math.min(1000, n - done)));
  }
  await c.query('vacuum analyze pgboss.job');
  await c.query('checkpoint');

  let ran = 0;
  const t0 = nowS();
  for (let i = 0; i < PGBOSS.workers; i++) {
    await boss.work('noop', { batchSize: PGBOSS.batchSize, pollingIntervalSeconds: PGBOSS.pollingIntervalSeconds },
      async (jobs) => { ran += jobs.length; });
  }
  await waitUntil(async () => ran >= n, 'pg-boss handlers', 1800000);
  await waitUntil(async () => (await pgbossLeft(c, 'noop')) === 0, 'pg-boss completions', 600000);
  const seconds = nowS() - t0;
  await boss.offWork('noop');
  await c.end();
  await boss.stop({ graceful: false, wait: true });
  emit({ jobs: n, seconds, jobs_per_s: n / seconds, settings: PGBOSS });
}

async function pgbossPickup() {
  const boss = await startBoss();
  await boss.purgeQueue('pickup');
  await sql(`delete from pgboss.job where name = 'pickup'`);
  const lat = [];
  for (let i = 0; i < PGBOSS.workers; i++) {
    await boss.work('pickup',
      { batchSize: PGBOSS.batchSize, pollingIntervalSeconds: PGBOSS.pollingIntervalSeconds },
      async (jobs) => {
        const t = nowS();
        for (const j of jobs) lat.push((t - j.data.t) * 1000);
      });
  }
  emit({ ready: true });
  await stopSignal();
  const c = new Client({ connectionString });
  await c.connect();
  await waitUntil(async () => (await pgbossLeft(c, 'pickup')) === 0, 'pg-boss pickup jobs', 120000);
  await c.end();
  await boss.offWork('pickup');
  await boss.stop({ graceful: false, wait: true });
  emit({ latencies_ms: lat, settings: PGBOSS });
}

// Submit one job at a time at a steady rate with pg-boss's own send() (pg-boss
// has no SQL API to call from pgbench).  t is the JS clock just before send,
// so pg-boss's latency includes its send round trip (well under its polling).
async function pgbossProduce(seconds, rate) {
  const boss = await startBoss();
  const total = Math.round(seconds * rate);
  const t0 = nowS();
  let inflight = 0;
  let sent = 0;
  let maxLagMs = 0;
  const pending = [];
  for (let i = 0; i < total; i++) {
    const due = t0 + i / rate;
    const wait = (due - nowS()) * 1000;
    if (wait > 1) await sleep(wait - 0.5);
    while (nowS() < due) { /* spin the last half millisecond */ }
    maxLagMs = Math.max(maxLagMs, (nowS() - due) * 1000);
    inflight++;
    pending.push(boss.send('pickup', { t: nowS() }).then(() => { inflight--; sent++; }));
  }
  await Promise.all(pending);
  await boss.stop({ graceful: false, wait: true });
  emit({ sent, seconds: nowS() - t0, max_schedule_lag_ms: maxLagMs });
}

// -------------------------------------------------------------------- main

const commands = {
  'graphile-setup': graphileSetup,
  'graphile-e2e': (n) => graphileE2e(parseInt(n, 10)),
  'graphile-pickup': graphilePickup,
  'pgboss-setup': pgbossSetup,
  'pgboss-e2e': (n) => pgbossE2e(parseInt(n, 10)),
  'pgboss-pickup': pgbossPickup,
  'pgboss-produce': (s, r) => pgbossProduce(parseFloat(s), parseFloat(r))
};

const [cmd, ...args] = process.argv.slice(2);
if (!commands[cmd]) {
  process.stderr.write(`usage: node peers.js {${Object.keys(commands).join('|')}} ...\n`);
  process.exit(2);
}
// exit only once stdout is flushed: a pipe takes big results (10,000 latencies)
// asynchronously, and process.exit() would cut them off
commands[cmd](...args).then(() => process.stdout.write('', () => process.exit(0)), (e) => {
  process.stderr.write(`${cmd}: ${e.stack || e}\n`);
  process.exit(1);
});
