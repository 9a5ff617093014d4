/**
 * The generated client against a live router: a streamed Router.Generate, a cancel mid-stream that
 * reaches the worker, and the services a client with no generated code finds by reflection.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import { GrpcReflection } from "grpc-js-reflection-client";
import { FinishReason, RouterClient, WorkerClient, type RouterGenerateResponse } from "../src/index.js";
import { env } from "./env.js";

const router = new RouterClient(env.grpcAddress);
after(() => router.close());

test("Router.Generate streams token deltas, the last with finish reason and usage", async () => {
  const messages: RouterGenerateResponse[] = [];
  const stream = router.generate(
    {
      model: env.model,
      prompt: { case: "chat", value: { messages: [{ role: "user", content: "Say hello." }] } },
      sampling: { maxTokens: 16, temperature: 0, ignoreEos: true },
    },
    { timeoutMs: 30_000 },
  );
  for await (const msg of stream) messages.push(msg);

  const tokens = messages.flatMap((m) => m.delta?.tokenIds ?? []);
  const text = messages.map((m) => m.delta?.text ?? "").join("");
  const last = messages.at(-1)!;
  assert.ok(messages.length > 1, "a stream, not one message");
  assert.equal(tokens.length, 16);
  assert.ok(text.length > 0);
  assert.equal(last.finishReason, FinishReason.LENGTH);
  assert.equal(last.usage?.completionTokens, 16);
  assert.ok((last.usage?.promptTokens ?? 0) > 3);
  assert.ok(last.workerId in env.workers, `worker ${last.workerId} is one of the cluster's`);
  assert.ok(messages.every((m) => m.requestId === last.requestId && m.requestId !== ""));
});

test("Router.Generate refuses an unknown model with NOT_FOUND", async () => {
  await assert.rejects(
    async () => {
      for await (const _ of router.generate({ model: "no-such-model", prompt: { case: "text", value: "hi" } }));
    },
    (err: grpc.ServiceError) => err.code === grpc.status.NOT_FOUND,
  );
});

/** A worker's Prometheus counter: the sum of the samples named `name` that carry `labels`. */
async function workerMetric(metricsAddress: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`http://${metricsAddress}/metrics`)).text();
  let total = 0;
  for (const line of text.split("\n")) {
    const sample = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!sample || sample[1] !== name) continue;
    const found = Object.fromEntries([...(sample[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) total += Number(sample[3]);
  }
  return total;
}

test("cancelling mid-stream aborts the request on its worker", async () => {
  const abort = new AbortController();
  const maxTokens = 1500; // seconds of decode at the simulated speed: it cannot finish on its own in the test
  const stream = router.generate(
    {
      model: env.model,
      prompt: { case: "text", value: "Go on and on." },
      sampling: { maxTokens, ignoreEos: true },
    },
    { signal: abort.signal },
  );
  const cancelled = { finish_reason: "cancelled" };
  let tokens = 0;
  let workerId = "";
  let worker: WorkerClient | undefined;
  let metrics = "";
  let cancelledBefore = 0;
  await assert.rejects(
    async () => {
      for await (const msg of stream) {
        tokens += msg.delta?.tokenIds.length ?? 0;
        workerId ||= msg.workerId;
        if (tokens >= 20 && worker === undefined) {
          worker = new WorkerClient(env.workers[workerId]!);
          const info = await worker.getInfo({ timeoutMs: 5000 });
          metrics = info.identity!.metricsAddress;
          assert.equal(info.load?.numRunning, 1, "the request runs on the worker that streams it");
          cancelledBefore = await workerMetric(metrics, "tessera_worker_requests_total", cancelled);
          abort.abort();
        }
      }
    },
    (err: grpc.ServiceError) => err.code === grpc.status.CANCELLED,
  );
  assert.ok(worker, `the stream reached 20 tokens (got ${tokens})`);
  try {
    // The worker drops it within a moment: nothing running, no tokens held for it.
    const deadline = Date.now() + 3000;
    let load = (await worker.getInfo()).load!;
    while ((load.numRunning > 0 || load.tokensInFlight > 0n) && Date.now() < deadline) {
      await sleep(100);
      load = (await worker.getInfo()).load!;
    }
    assert.equal(load.numRunning, 0);
    assert.equal(load.tokensInFlight, 0n);
    assert.equal(
      await workerMetric(metrics, "tessera_worker_requests_total", cancelled),
      cancelledBefore + 1,
      "the worker counts one more cancelled request",
    );
    // and generates nothing more for it
    const generated = await workerMetric(metrics, "tessera_worker_generation_tokens_total");
    await sleep(500);
    assert.equal(await workerMetric(metrics, "tessera_worker_generation_tokens_total"), generated);
  } finally {
    worker.close();
  }
});

test("reflection lists the router's services and describes them well enough to call", async () => {
  const reflection = new GrpcReflection(env.grpcAddress, grpc.credentials.createInsecure());
  const services = await reflection.listServices();
  for (const name of ["tessera.v1.Router", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]) {
    assert.ok(services.includes(name), `${name} in ${services.join(", ")}`);
  }
  const methods = Object.fromEntries(
    (await reflection.listMethods("tessera.v1.Router")).map((m) => [m.name, m.definition]),
  );
  assert.deepEqual(Object.keys(methods).sort(), ["Generate", "ListModels"]);
  assert.equal(methods.Generate!.responseStream, true);
  assert.equal(methods.ListModels!.responseStream, false);

  // A client built from the reflected descriptors alone, no generated code, calls the router.
  const descriptor = await reflection.getDescriptorBySymbol("tessera.v1.Router");
  const pkg = descriptor.getPackageObject({ keepCase: true }) as any;
  const dynamic = new pkg.tessera.v1.Router(env.grpcAddress, grpc.credentials.createInsecure()) as grpc.Client;
  try {
    const reply = await new Promise<any>((resolve, reject) =>
      (dynamic as any).ListModels({}, (err: Error | null, value: any) => (err ? reject(err) : resolve(value))),
    );
    const generated = await router.listModels();
    assert.deepEqual(
      reply.models.map((m: { id: string }) => m.id),
      generated.models.map((m) => m.id),
    );
    assert.ok(generated.models.some((m) => m.id === env.model));
  } finally {
    dynamic.close();
  }
});
