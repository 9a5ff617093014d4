/** The live cluster the tests run against, as tests/integration/test_node_client.py passes it. */
function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/integration/test_node_client.py`);
  return value;
}

export const env = {
  /** The router's gRPC address (host:port). */
  grpcAddress: required("TESSERA_GRPC_ADDRESS"),
  /** The router's OpenAI-compatible base URL (http://host:port). */
  httpUrl: required("TESSERA_HTTP_URL"),
  /** The model the cluster serves. */
  model: required("TESSERA_MODEL"),
  /** Worker id -> the worker's gRPC address. */
  workers: JSON.parse(required("TESSERA_WORKERS")) as Record<string, string>,
};
