/**
 * Tessera's gRPC API (tessera.v1) for Node and TypeScript: the generated messages and service
 * descriptors, a generic client for any service, and RouterClient, the one most callers want.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { TesseraClient, type CallOptions, type ServerStream } from "./client.js";
import {
  ListModelsRequestSchema,
  Router,
  RouterGenerateRequestSchema,
  type ListModelsResponse,
  type RouterGenerateResponse,
} from "./gen/tessera/v1/router_pb.js";
import { GetInfoRequestSchema, Worker, type WorkerInfo } from "./gen/tessera/v1/worker_pb.js";

export { TesseraClient, type CallOptions, type ClientOptions, type ServerStream } from "./client.js";
export * from "./gen/tessera/v1/common_pb.js";
export * from "./gen/tessera/v1/router_pb.js";
export * from "./gen/tessera/v1/worker_pb.js";
export * from "./gen/tessera/v1/scheduler_pb.js";
export * from "./gen/tessera/v1/autoscaler_pb.js";

/** The router's inference API (--grpc-port, 50051 by default). */
export class RouterClient extends TesseraClient {
  /**
   * Generate from text, chat messages or token ids: a stream of token deltas, the last with
   * finish_reason and usage. Aborting `options.signal` (or `cancel()`) aborts the request on
   * its worker too.
   */
  generate(
    request: MessageInitShape<typeof RouterGenerateRequestSchema>,
    options?: CallOptions,
  ): ServerStream<RouterGenerateResponse> {
    return this.serverStream(Router.method.generate, request, options);
  }

  /** The models the router can serve now, with their context length and worker count. */
  listModels(
    request: MessageInitShape<typeof ListModelsRequestSchema> = {},
    options?: CallOptions,
  ): Promise<ListModelsResponse> {
    return this.unary(Router.method.listModels, request, options);
  }
}

/** A worker's own API: its identity and load (what operators and health probes read). */
export class WorkerClient extends TesseraClient {
  getInfo(options?: CallOptions): Promise<WorkerInfo> {
    return this.unary(Worker.method.getInfo, {} satisfies MessageInitShape<typeof GetInfoRequestSchema>, options);
  }
}
