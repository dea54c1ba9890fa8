// BullMQ recovery anchor: node recovery.mjs worker <url> <name> | load <url> <n>
// Same protocol as the novapulse recovery worker: HSET bench:started seq name; 20 ms of work; RPUSH bench:handled seq.
// 1% poison (seq % 100 == 99) throws; 3 attempts with exponential backoff, then the job fails (BullMQ's dead letters).
import { Queue, Worker } from "bullmq";
import IORedis from "ioredis";

const [mode, url, arg] = process.argv.slice(2);
const u = new URL(url);
const conn = () => new IORedis({ host: u.hostname, port: Number(u.port || 6379), maxRetriesPerRequest: null });
const PAD = "x".repeat(120);
const LOCK_MS = Number(process.env.BENCH_LOCK_MS || 2000);

if (mode === "load") {
  const n = Number(arg);
  const q = new Queue("recq", { connection: conn() });
  for (let i = 0; i < n; i += 1000) {
    const jobs = [];
    for (let j = i; j < Math.min(n, i + 1000); j++)
      jobs.push({ name: "noop", data: { seq: j, sent_ns: Date.now() * 1e6, org_id: "org_0123456789abcdef", pad: PAD },
        opts: { attempts: 3, backoff: { type: "exponential", delay: 50 } } });
    await q.addBulk(jobs);
  }
  await q.close();
  process.stdout.write(JSON.stringify({ loaded: n }) + "\n");
  process.exit(0);
} else {
  const name = arg;
  const r = conn();
  const worker = new Worker("recq", async (job) => {
    const seq = job.data.seq;
    if (seq % 100 === 99) throw new Error("poison");
    await r.hset("bench:started", String(seq), name);
    await new Promise((res) => setTimeout(res, 20));
    await r.rpush("bench:handled", String(seq));
  }, { connection: conn(), concurrency: 16, lockDuration: LOCK_MS, stalledInterval: LOCK_MS / 2, maxStalledCount: 3,
       removeOnComplete: { count: 0 } });
  await worker.waitUntilReady();
  process.stdout.write(JSON.stringify({ ready: true }) + "\n");
  process.on("SIGTERM", async () => { await worker.close(); process.exit(0); });
}
