from tessera.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerGroup(_message.Message):
    __slots__ = ("name", "model", "replicas", "role", "accelerator", "parallelism", "engine", "engine_args")
    class EngineArgsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    PARALLELISM_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_ARGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    replicas: int
    role: _common_pb2.Role
    accelerator: str
    parallelism: _common_pb2.Parallelism
    engine: str
    engine_args: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., replicas: _Optional[int] = ..., role: _Optional[_Union[_common_pb2.Role, str]] = ..., accelerator: _Optional[str] = ..., parallelism: _Optional[_Union[_common_pb2.Parallelism, _Mapping]] = ..., engine: _Optional[str] = ..., engine_args: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("timestamp_unix_ms", "group", "action", "instance", "reason")
    TIMESTAMP_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    timestamp_unix_ms: int
    group: str
    action: str
    instance: str
    reason: str
    def __init__(self, timestamp_unix_ms: _Optional[int] = ..., group: _Optional[str] = ..., action: _Optional[str] = ..., instance: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetPlanRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Plan(_message.Message):
    __slots__ = ("groups", "leader_id", "this_is_leader", "ready", "pending", "recent_decisions", "explanation")
    class ReadyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class PendingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    THIS_IS_LEADER_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    RECENT_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[WorkerGroup]
    leader_id: str
    this_is_leader: bool
    ready: _containers.ScalarMap[str, int]
    pending: _containers.ScalarMap[str, int]
    recent_decisions: _containers.RepeatedCompositeFieldContainer[Decision]
    explanation: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, groups: _Optional[_Iterable[_Union[WorkerGroup, _Mapping]]] = ..., leader_id: _Optional[str] = ..., this_is_leader: _Optional[bool] = ..., ready: _Optional[_Mapping[str, int]] = ..., pending: _Optional[_Mapping[str, int]] = ..., recent_decisions: _Optional[_Iterable[_Union[Decision, _Mapping]]] = ..., explanation: _Optional[_Iterable[str]] = ...) -> None: ...
