/**
 * gRPC calls of any tessera.v1 service over @grpc/grpc-js, typed by the descriptors that
 * protoc-gen-es generated (src/gen). protoc-gen-es writes messages and service descriptors but
 * no transport; these few lines are the transport, so the only runtime dependencies are
 * @grpc/grpc-js and @bufbuild/protobuf.
 */
import * as grpc from "@grpc/grpc-js";
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";

/** Per-call settings. */
export interface CallOptions {
  /** Abort the call: the stream ends with a CANCELLED error and the server is told at once. */
  signal?: AbortSignal;
  /** Give up after this many milliseconds (DEADLINE_EXCEEDED). */
  timeoutMs?: number;
  /** Extra request metadata (W3C traceparent, say). */
  metadata?: Record<string, string>;
}

/** How to reach a Tessera service. */
export interface ClientOptions {
  /** Channel credentials; plaintext when absent (`tessera up` without --tls). */
  credentials?: grpc.ChannelCredentials;
  /** A Tessera API key, sent as `authorization: Bearer KEY` (what the router's gate reads). */
  apiKey?: string;
  /** Channel options passed to @grpc/grpc-js. */
  channelOptions?: grpc.ChannelOptions;
}

/** A server stream: iterate it with `for await`; `cancel()` ends it from the client side. */
export interface ServerStream<T> extends AsyncIterable<T> {
  cancel(): void;
}

function methodPath(method: { parent: { typeName: string }; name: string }): string {
  return `/${method.parent.typeName}/${method.name}`;
}

function serializer<I extends DescMessage>(schema: I): (value: MessageShape<I>) => Buffer {
  return (value) => Buffer.from(toBinary(schema, value));
}

function deserializer<O extends DescMessage>(schema: O): (bytes: Buffer) => MessageShape<O> {
  return (bytes) => fromBinary(schema, bytes);
}

/** A channel to one Tessera service address, with typed unary and server-streaming calls. */
export class TesseraClient {
  protected readonly client: grpc.Client;
  private readonly apiKey: string | undefined;

  constructor(address: string, options: ClientOptions = {}) {
    this.client = new grpc.Client(
      address,
      options.credentials ?? grpc.credentials.createInsecure(),
      options.channelOptions,
    );
    this.apiKey = options.apiKey;
  }

  private metadata(options: CallOptions): grpc.Metadata {
    const md = new grpc.Metadata();
    if (this.apiKey) md.set("authorization", `Bearer ${this.apiKey}`);
    for (const [key, value] of Object.entries(options.metadata ?? {})) md.set(key, value);
    return md;
  }

  private callOptions(options: CallOptions): grpc.CallOptions {
    return options.timeoutMs === undefined ? {} : { deadline: Date.now() + options.timeoutMs };
  }

  /** One request, one response. */
  unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    request: MessageInitShape<I>,
    options: CallOptions = {},
  ): Promise<MessageShape<O>> {
    return new Promise((resolve, reject) => {
      const call = this.client.makeUnaryRequest(
        methodPath(method),
        serializer(method.input),
        deserializer(method.output),
        create(method.input, request),
        this.metadata(options),
        this.callOptions(options),
        (err, value) => (err || value === undefined ? reject(err) : resolve(value)),
      );
      options.signal?.addEventListener("abort", () => call.cancel(), { once: true });
    });
  }

  /** One request, a stream of responses. */
  serverStream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodServerStreaming<I, O>,
    request: MessageInitShape<I>,
    options: CallOptions = {},
  ): ServerStream<MessageShape<O>> {
    const call = this.client.makeServerStreamRequest(
      methodPath(method),
      serializer(method.input),
      deserializer(method.output),
      create(method.input, request),
      this.metadata(options),
      this.callOptions(options),
    );
    if (options.signal?.aborted) call.cancel();
    options.signal?.addEventListener("abort", () => call.cancel(), { once: true });
    return {
      cancel: () => call.cancel(),
      // grpc-js streams are object-mode Readables: async-iterable, ending with the call's error.
      [Symbol.asyncIterator]: () => (call as AsyncIterable<MessageShape<O>>)[Symbol.asyncIterator](),
    };
  }

  close(): void {
    this.client.close();
  }
}
