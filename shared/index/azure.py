"""The Azure adapter of the table port (:class:`shared.ports.TableStore`) over ``azure-data-tables``.

Values go in and come out as plain Python: integers outside Int32 are sent as Edm.Int64 (the SDK
infers only Int32), bytes as Edm.Binary, and typed wrappers are unwrapped on the way out. Filters
are always built with ``parameters`` (the SDK quotes values), never by pasting values into OData.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import (
    EdmType,
    EntityProperty,
    TableClient,
    TableServiceClient,
    TableTransactionError,
    UpdateMode,
)

from shared.ports import Row, RowChanged, RowExists, TableOp

_INT32 = range(-(2**31), 2**31)
_LOST_RACE = ("EntityAlreadyExists", "UpdateConditionNotSatisfied", "ResourceNotFound")


def _out(entity: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in entity.items():
        if isinstance(v, int) and not isinstance(v, bool) and v not in _INT32:
            v = EntityProperty(v, EdmType.INT64)
        out[k] = v
    return out


def _in(entity: Any) -> Row:  # Any: the SDK's TableEntity (a dict with .metadata)
    values = {k: (v.value if isinstance(v, EntityProperty) else v) for k, v in entity.items()}
    meta = getattr(entity, "metadata", None) or {}
    return Row.of(values, str(meta.get("etag", "")))


def _etag(meta: Mapping[str, Any] | None) -> str:
    return str((meta or {}).get("etag", ""))


class AzureTableStore:
    def __init__(self, service: TableServiceClient) -> None:
        self.service = service
        self._clients: dict[str, Any] = {}

    def _t(self, table: str) -> TableClient:
        client = self._clients.get(table)
        if client is None:
            client = self.service.get_table_client(table)
            self._clients[table] = client
        return client

    def get(self, table: str, pk: str, rk: str) -> Row | None:
        try:
            return _in(self._t(table).get_entity(pk, rk))
        except ResourceNotFoundError:
            return None

    def insert(self, table: str, entity: Mapping[str, Any]) -> str:
        try:
            return _etag(self._t(table).create_entity(_out(entity)))
        except ResourceExistsError:
            raise RowExists(f"{entity['PartitionKey']}/{entity['RowKey']}") from None

    def upsert(self, table: str, entity: Mapping[str, Any], *, merge: bool = False) -> None:
        self._t(table).upsert_entity(_out(entity), mode=UpdateMode.MERGE if merge else UpdateMode.REPLACE)

    def merge(self, table: str, entity: Mapping[str, Any]) -> bool:
        try:
            self._t(table).update_entity(_out(entity), mode=UpdateMode.MERGE)
        except ResourceNotFoundError:
            return False
        return True

    def replace(self, table: str, entity: Mapping[str, Any], *, etag: str) -> str:
        try:
            return _etag(self._t(table).update_entity(_out(entity), mode=UpdateMode.REPLACE, etag=etag,
                                                      match_condition=MatchConditions.IfNotModified))
        except ResourceNotFoundError:
            raise RowChanged("gone") from None
        except HttpResponseError as exc:
            if exc.status_code in (409, 412):
                raise RowChanged(str(exc.status_code)) from None
            raise

    def delete(self, table: str, pk: str, rk: str, *, etag: str | None = None) -> None:
        try:  # the SDK treats an absent entity as deleted
            if etag:
                self._t(table).delete_entity(pk, rk, etag=etag, match_condition=MatchConditions.IfNotModified)
            else:
                self._t(table).delete_entity(pk, rk)
        except ResourceNotFoundError:
            return
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise RowChanged("412") from None
            raise

    def query(self, table: str, *, pk: str | None = None, pk_range: tuple[str, str] | None = None,
              rk_range: tuple[str, str] | None = None, equals: Mapping[str, Any] | None = None,
              select: Sequence[str] | None = None, page_size: int | None = None) -> Iterator[Row]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if pk is not None:
            clauses.append("PartitionKey eq @pk")
            params["pk"] = pk
        elif pk_range is not None:
            clauses.append("PartitionKey ge @plo and PartitionKey lt @phi")
            params["plo"], params["phi"] = pk_range
        if rk_range is not None:
            clauses.append("RowKey ge @rlo and RowKey lt @rhi")
            params["rlo"], params["rhi"] = rk_range
        for i, (name, value) in enumerate((equals or {}).items()):
            clauses.append(f"{name} eq @v{i}")
            params[f"v{i}"] = value
        cols = list(select) if select else None
        client = self._t(table)
        pages = (client.query_entities(" and ".join(clauses), parameters=params, select=cols,
                                       results_per_page=page_size) if clauses
                 else client.list_entities(select=cols, results_per_page=page_size))
        for entity in pages:
            yield _in(entity)

    def transact(self, table: str, ops: Sequence[TableOp]) -> None:
        batch: list[Any] = []
        for op in ops:
            entity = _out(op.entity)
            if op.kind == "insert":
                batch.append(("create", entity))
            elif op.kind == "merge" and op.etag:
                batch.append(("update", entity, {"mode": UpdateMode.MERGE, "etag": op.etag,
                                                 "match_condition": MatchConditions.IfNotModified}))
            elif op.kind in ("upsert", "merge"):
                batch.append(("upsert", entity, {"mode": UpdateMode.MERGE if op.kind == "merge" else
                                                 UpdateMode.REPLACE}))
            elif op.kind == "replace":
                kw: dict[str, Any] = {"mode": UpdateMode.REPLACE}
                if op.etag:
                    kw.update(etag=op.etag, match_condition=MatchConditions.IfNotModified)
                batch.append(("update", entity, kw))
            else:
                kw = {"etag": op.etag, "match_condition": MatchConditions.IfNotModified} if op.etag else {}
                batch.append(("delete", entity, kw))
        try:
            self._t(table).submit_transaction(batch)
        except TableTransactionError as exc:
            code = str(getattr(exc, "error_code", "") or "")
            if code == "EntityAlreadyExists":
                raise RowExists(code) from None
            if code in _LOST_RACE:
                raise RowChanged(code) from None
            raise

    def ensure_tables(self, names: Sequence[str]) -> None:
        for name in names:
            try:
                self.service.create_table(name)
            except ResourceExistsError:
                pass
