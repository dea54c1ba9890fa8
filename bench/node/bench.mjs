// Node BullMQ anchor: node bench.mjs <mode> <redisUrl> ... ; prints one JSON line.
import { Queue, Worker } from "bullmq";
import IORedis from "ioredis";
import { readFileSync } from "node:fs";

const [mode, url, ...rest] = process.argv.slice(2);
const u = new URL(url);
const conn = () => new IORedis({ host: u.hostname, port: Number(u.port || 6379), maxRetriesPerRequest: null });
const connection = conn();
const PAD = "x".repeat(120);
const payload = (seq, sentNs) => ({ seq, sent_ns: sentNs ?? Number(process.hrtime.bigint()), org_id: "org_0123456789abcdef", pad: PAD });
const nowNs = () => Date.now() * 1e6; // wall clock, comparable across processes
// VmHWM: this process's own peak (getrusage's maxRSS keeps the parent's high-water mark across exec)
const peakRssMb = () => {
  try {
    const m = readFileSync("/proc/self/status", "utf8").match(/VmHWM:\s+(\d+)/);
    if (m) return Number(m[1]) / 1024;
  } catch {}
  return process.resourceUsage().maxRSS / 1024;
};
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

async function produce(n) {
  const result = {};
  const modes = {
    one: async (q) => { for (let i = 0; i < n; i++) await q.add("noop", payload(i)); },
    inflight64: async (q) => {
      let next = 0;
      const lane = async () => { while (next < n) { const i = next++; await q.add("noop", payload(i)); } };
      await Promise.all(Array.from({ length: 64 }, lane));
    },
    batch100: async (q) => {
      for (let i = 0; i < n; i += 100) {
        const jobs = [];
        for (let j = i; j < Math.min(n, i + 100); j++) jobs.push({ name: "noop", data: payload(j) });
        await q.addBulk(jobs);
      }
    },
  };
  for (const [name, fn] of Object.entries(modes)) {
    const q = new Queue(`produce-${name}`, { connection });
    await q.obliterate({ force: true }).catch(() => {});
    const t0 = performance.now();
    await fn(q);
    const elapsed = (performance.now() - t0) / 1000;
    const counts = await q.getJobCounts("wait");
    result[name] = { rate: n / elapsed, elapsed, stored: counts.wait ?? 0 };
    await q.obliterate({ force: true }).catch(() => {});
    await q.close();
  }
  out(result);
}

async function preload(n) {
  const q = new Queue("benchq", { connection });
  for (let i = 0; i < n; i += 1000) {
    const jobs = [];
    for (let j = i; j < Math.min(n, i + 1000); j++) jobs.push({ name: "noop", data: payload(j) });
    await q.addBulk(jobs);
  }
  await q.close();
  out({ preloaded: n });
}

async function drain(n, concurrency) {
  const seen = new Set();
  let handled = 0;
  let t1 = 0, c1 = null;
  let resolve;
  const done = new Promise((r) => (resolve = r));
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const worker = new Worker("benchq", async (job) => {
    handled++;
    seen.add(job.data.seq);
    if (seen.size >= n && !t1) { t1 = performance.now(); c1 = process.cpuUsage(c0); resolve(); }
  }, { connection, concurrency, removeOnComplete: { count: 0 } });
  await done;
  await worker.close();
  out({ elapsed: (t1 - t0) / 1000, cpu: (c1.user + c1.system) / 1e6, rss_mb: peakRssMb(), handled, distinct: seen.size });
}

async function latency(rate, seconds) {
  const q = new Queue("latq", { connection });
  await q.obliterate({ force: true }).catch(() => {});
  const lat = [];
  const total = Math.round(rate * seconds);
  let resolve;
  const done = new Promise((r) => (resolve = r));
  const worker = new Worker("latq", async (job) => {
    lat.push((nowNs() - job.data.sent_ns) / 1e6);
    if (lat.length >= total) resolve();
  }, { connection, concurrency: 100, removeOnComplete: { count: 0 } });
  await worker.waitUntilReady();
  const start = performance.now();
  let sent = 0;
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate));
    const jobs = [];
    for (; sent < due; sent++) jobs.push({ name: "noop", data: payload(sent, nowNs()) });
    if (jobs.length) await q.addBulk(jobs);
    else await new Promise((r) => setTimeout(r, 1));
  }
  await done;
  await worker.close();
  await q.close();
  lat.sort((a, b) => a - b);
  const at = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
  out({ p50: at(0.5), p99: at(0.99), p999: at(0.999), count: lat.length, note: "ms resolution clock (Date.now)" });
}

const main = { produce: () => produce(Number(rest[0])), preload: () => preload(Number(rest[0])),
  drain: () => drain(Number(rest[0]), Number(rest[1] ?? 100)), latency: () => latency(Number(rest[0]), Number(rest[1])) };
await main[mode]();
process.exit(0);
