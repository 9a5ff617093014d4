from tessera.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlaceOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLACE_OUTCOME_UNSPECIFIED: _ClassVar[PlaceOutcome]
    PLACE_OUTCOME_PLACED: _ClassVar[PlaceOutcome]
    PLACE_OUTCOME_NO_WORKER: _ClassVar[PlaceOutcome]
    PLACE_OUTCOME_SATURATED: _ClassVar[PlaceOutcome]
    PLACE_OUTCOME_UNKNOWN_PROFILE: _ClassVar[PlaceOutcome]
PLACE_OUTCOME_UNSPECIFIED: PlaceOutcome
PLACE_OUTCOME_PLACED: PlaceOutcome
PLACE_OUTCOME_NO_WORKER: PlaceOutcome
PLACE_OUTCOME_SATURATED: PlaceOutcome
PLACE_OUTCOME_UNKNOWN_PROFILE: PlaceOutcome

class WorkerReport(_message.Message):
    __slots__ = ("worker_id", "hello", "load", "kv_events")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    KV_EVENTS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    hello: _common_pb2.WorkerIdentity
    load: _common_pb2.LoadReport
    kv_events: _common_pb2.KVEventBatch
    def __init__(self, worker_id: _Optional[str] = ..., hello: _Optional[_Union[_common_pb2.WorkerIdentity, _Mapping]] = ..., load: _Optional[_Union[_common_pb2.LoadReport, _Mapping]] = ..., kv_events: _Optional[_Union[_common_pb2.KVEventBatch, _Mapping]] = ...) -> None: ...

class ReportAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PlaceRequest(_message.Message):
    __slots__ = ("request_id", "model", "prompt_tokens", "max_tokens", "prompt_block_hashes", "block_size", "exclude_worker_ids", "session_id", "priority", "profile", "trace_context", "ttft_slo_s", "over_fair_share")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_BLOCK_HASHES_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_WORKER_IDS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TTFT_SLO_S_FIELD_NUMBER: _ClassVar[int]
    OVER_FAIR_SHARE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    prompt_tokens: int
    max_tokens: int
    prompt_block_hashes: _containers.RepeatedScalarFieldContainer[int]
    block_size: int
    exclude_worker_ids: _containers.RepeatedScalarFieldContainer[str]
    session_id: str
    priority: int
    profile: str
    trace_context: _containers.ScalarMap[str, str]
    ttft_slo_s: float
    over_fair_share: bool
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., max_tokens: _Optional[int] = ..., prompt_block_hashes: _Optional[_Iterable[int]] = ..., block_size: _Optional[int] = ..., exclude_worker_ids: _Optional[_Iterable[str]] = ..., session_id: _Optional[str] = ..., priority: _Optional[int] = ..., profile: _Optional[str] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., ttft_slo_s: _Optional[float] = ..., over_fair_share: _Optional[bool] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("worker_id", "address", "role", "data_parallel_rank", "score")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    DATA_PARALLEL_RANK_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    address: str
    role: _common_pb2.Role
    data_parallel_rank: int
    score: float
    def __init__(self, worker_id: _Optional[str] = ..., address: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.Role, str]] = ..., data_parallel_rank: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...

class PlaceResponse(_message.Message):
    __slots__ = ("outcome", "worker", "prefill", "profile", "reason", "candidates", "request_id", "expected_cached_tokens")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    PREFILL_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    outcome: PlaceOutcome
    worker: Placement
    prefill: Placement
    profile: str
    reason: str
    candidates: int
    request_id: str
    expected_cached_tokens: int
    def __init__(self, outcome: _Optional[_Union[PlaceOutcome, str]] = ..., worker: _Optional[_Union[Placement, _Mapping]] = ..., prefill: _Optional[_Union[Placement, _Mapping]] = ..., profile: _Optional[str] = ..., reason: _Optional[str] = ..., candidates: _Optional[int] = ..., request_id: _Optional[str] = ..., expected_cached_tokens: _Optional[int] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class WorkerState(_message.Message):
    __slots__ = ("identity", "load", "healthy", "registered", "stream_connected", "last_report_unix_ms")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    STREAM_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    identity: _common_pb2.WorkerIdentity
    load: _common_pb2.LoadReport
    healthy: bool
    registered: bool
    stream_connected: bool
    last_report_unix_ms: int
    def __init__(self, identity: _Optional[_Union[_common_pb2.WorkerIdentity, _Mapping]] = ..., load: _Optional[_Union[_common_pb2.LoadReport, _Mapping]] = ..., healthy: _Optional[bool] = ..., registered: _Optional[bool] = ..., stream_connected: _Optional[bool] = ..., last_report_unix_ms: _Optional[int] = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerState]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerState, _Mapping]]] = ...) -> None: ...
