/** The official Node `openai` package against the router's OpenAI-compatible HTTP API. */
import assert from "node:assert/strict";
import { test } from "node:test";
import OpenAI from "openai";
import { env } from "./env.js";

const client = new OpenAI({ baseURL: `${env.httpUrl}/v1`, apiKey: "unused", maxRetries: 0, timeout: 30_000 });

test("a chat completion", async () => {
  const reply = await client.chat.completions.create({
    model: env.model,
    messages: [{ role: "user", content: "Say hello." }],
    max_tokens: 12,
    temperature: 0,
  });
  assert.equal(reply.object, "chat.completion");
  assert.equal(reply.model, env.model);
  assert.equal(reply.choices.length, 1);
  const choice = reply.choices[0]!;
  assert.equal(choice.message.role, "assistant");
  assert.ok(choice.message.content && choice.message.content.length > 0);
  assert.ok(choice.finish_reason === "length" || choice.finish_reason === "stop");
  assert.ok(reply.usage && reply.usage.completion_tokens > 0 && reply.usage.completion_tokens <= 12);
  assert.equal(reply.usage.total_tokens, reply.usage.prompt_tokens + reply.usage.completion_tokens);
});

test("a streamed chat completion, with usage at the end", async () => {
  const stream = await client.chat.completions.create({
    model: env.model,
    messages: [{ role: "user", content: "Count to ten." }],
    max_tokens: 12,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let chunks = 0;
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | undefined;
  let id = "";
  for await (const chunk of stream) {
    assert.equal(chunk.object, "chat.completion.chunk");
    id ||= chunk.id;
    assert.equal(chunk.id, id, "one id for the whole stream");
    chunks += 1;
    const choice = chunk.choices[0];
    text += choice?.delta.content ?? "";
    finish = choice?.finish_reason ?? finish;
    if (chunk.usage) usage = chunk.usage;
  }
  assert.ok(chunks > 2, `streamed in pieces (${chunks} chunks)`);
  assert.ok(text.length > 0);
  assert.ok(finish === "length" || finish === "stop");
  assert.ok(usage && usage.completion_tokens > 0 && usage.completion_tokens <= 12);
});
