// BullMQ anchor for queue-bench: addBulk JOBS no-op jobs, then one Worker with CONCURRENCY
// processes them; prints one JSON line with the time from the first add to the last completion.
// Finished jobs are removed (removeOnComplete), as our layer removes them.
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';

// BullMQ 6.7 in an ES module takes constructed ioredis clients rather than connection options.
const client = () => new Redis({ host: '127.0.0.1', port: Number(process.env.REDIS_PORT), maxRetriesPerRequest: null });
const jobs = Number(process.env.JOBS ?? 20000);
const concurrency = Number(process.env.CONCURRENCY ?? 50);
const name = 'bench';

const queue = new Queue(name, { connection: client() });
await queue.waitUntilReady();
const batch = Array.from({ length: jobs }, (_, n) => ({
  name: 'noop',
  data: { n },
  opts: { removeOnComplete: true, removeOnFail: true },
}));

const started = performance.now();
await queue.addBulk(batch);
let completed = 0;
let failed = 0;
let worker;
await new Promise((resolve) => {
  worker = new Worker(name, async () => {}, { connection: client(), concurrency });
  worker.on('completed', () => {
    completed += 1;
    if (completed + failed === jobs) resolve();
  });
  worker.on('failed', () => {
    failed += 1;
    if (completed + failed === jobs) resolve();
  });
});
const seconds = (performance.now() - started) / 1000;
console.log(JSON.stringify({ jobs, completed, failed, seconds, jobsPerSec: jobs / seconds }));
await worker.close();
await queue.close();
process.exit(0);
