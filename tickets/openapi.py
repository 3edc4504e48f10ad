"""OpenAPI 3 description of the tickets API (tickets/api.py), served at /api/tickets/openapi.json.

Action inputs are generated from :data:`tickets.workflow.ACTIONS`, so the
document cannot drift from what the workflow validates.
"""

from __future__ import annotations

from typing import Any

from tickets.models import Kind, State
from tickets.queries import EXPIRY_BUCKETS
from tickets.workflow import ACTIONS, REGISTRATION_FIELDS, Field

FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "text": {"type": "string"}, "amount": {"type": "string", "pattern": r"^\d+(\.\d{1,2})?$"},
    "date": {"type": "string", "format": "date"}, "unit": {"type": "integer"},
    "clauses": {"type": "array", "items": {"type": "string"}}, "ids": {"type": "array", "items": {"type": "integer"}},
    "level": {"type": "string", "enum": ["I", "II", "III", "IV"]}, "call": {"type": "string"},
    "authority": {"type": "string", "description": "移交单位名录（config/rules.yaml）中的一项"},
}
ERROR = {"$ref": "#/components/schemas/Error"}


def _object(fields: tuple[Field, ...], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props = {f.key: {**FIELD_SCHEMAS[f.kind], "description": f.label} for f in fields}
    props.update(extra or {})
    required = [f.key for f in fields if f.required]
    return {"type": "object", "properties": props, **({"required": required} if required else {})}


def _json(schema: dict[str, Any], description: str = "成功") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "输入有误（error 说明原因，field 指出字段）", 401: "未登录", 403: "无权操作",
            404: "工单不存在或不在本单位范围内", 409: "当前状态不允许此操作", 413: "文件过大", 415: "文件类型不支持"}
    return {str(c): _json(ERROR, text[c]) for c in codes}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


NUMBER_PARAM = {"name": "number", "in": "path", "required": True, "description": "工单号（日期 + 当日序号）",
                "schema": {"type": "string", "pattern": r"^\d{13,}$"}}
FILTERS = [
    _query("phone", "诉求方手机号码"), _query("number", "工单号码"), _query("province", "案件归属地（省）"),
    _query("city", "案件归属地（市）"), _query("county", "案件归属地（区县）"),
    _query("expiry", "距过期天数", {"type": "string", "enum": list(EXPIRY_BUCKETS)}),
    _query("complaint_object", "投诉对象"), _query("event_category", "事件类别"),
    _query("state", "工单状态", {"type": "string", "enum": [s.value for s in State]}),
    _query("supervised", "是否督办", {"type": "boolean"}), _query("hotline", "热线"),
    _query("kind", "工单类型", {"type": "string", "enum": [k.value for k in Kind]}),
]


def _action_bodies() -> list[dict[str, Any]]:
    return [{
        "title": spec.name,
        "type": "object",
        "properties": {"action": {"const": spec.name}, "inputs": _object(spec.fields)},
        "required": ["action", "inputs"],
    } for spec in ACTIONS.values()]


def openapi_document() -> dict[str, Any]:
    ticket = {"$ref": "#/components/schemas/Ticket"}
    registration = _object(REGISTRATION_FIELDS, {
        "kind": {"type": "string", "enum": [k.value for k in Kind], "description": "工单类型"},
        "call_ids": {"type": "array", "items": {"type": "string"}, "description": "来电编号（坐席弹屏显示的 call_records.ref，不是 Asterisk 的 uniqueid）"},
        "group_size": {"type": "integer", "minimum": 1, "description": "诉求人数"},
        "source": {"type": "string", "enum": ["agent", "voicemail", "ivr"], "description": "来源"},
    })
    binary = {"type": "string", "format": "binary"}
    return {
        "openapi": "3.0.3",
        "info": {"title": "12301/12365 工单接口", "version": "1.0",
                 "description": "工单登记、派单、办理流程、期限、风险分级、查询统计与归档。所有接口需登录，"
                                "并且只能访问本单位及下级单位的工单。"},
        "paths": {
            "/api/tickets": {
                "get": {"summary": "工单列表（可组合筛选、分页）", "parameters": [
                    *FILTERS, _query("page", "页码", {"type": "integer", "minimum": 1}),
                    _query("page_size", "每页条数", {"type": "integer", "minimum": 1, "maximum": 200})],
                    "responses": {"200": _json({"type": "object", "properties": {
                        "total": {"type": "integer"}, "page": {"type": "integer"}, "page_size": {"type": "integer"},
                        "items": {"type": "array", "items": ticket}}}), **_errors(400, 401)}},
                "post": {"summary": "登记工单（来电转工单）",
                         "requestBody": {"required": True, "content": {"application/json": {"schema": registration}}},
                         "responses": {"201": _json(ticket, "已登记"), **_errors(400, 401, 403)}},
            },
            "/api/tickets/export": {"get": {
                "summary": "按筛选条件导出工单列表", "parameters": [
                    *FILTERS, _query("format", "导出格式", {"type": "string", "enum": ["csv", "xlsx"]})],
                "responses": {"200": {"description": "文件", "content": {
                    "text/csv": {"schema": binary},
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {"schema": binary}}},
                    **_errors(400, 401)}}},
            "/api/tickets/counters": {"get": {"summary": "首页统计（各状态数量、督办、10 天内过期、结案率）",
                                              "responses": {"200": _json({"type": "object"}), **_errors(401)}}},
            "/api/tickets/closing-rates": {"get": {"summary": "各经办人结案率",
                                                   "responses": {"200": _json({"type": "object"}), **_errors(401)}}},
            "/api/tickets/suggest-unit": {"get": {
                "summary": "根据案件归属地和投诉对象推荐处理单位",
                "parameters": [_query("hotline", "热线"), _query("province", "省"), _query("city", "市"),
                               _query("county", "区县"), _query("complaint_object", "投诉对象")],
                "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 404)}}},
            "/api/tickets/{number}": {"get": {"summary": "工单详情（含可执行的操作）", "parameters": [NUMBER_PARAM],
                                               "responses": {"200": _json(ticket), **_errors(401, 404)}}},
            "/api/tickets/{number}/log": {"get": {
                "summary": "工单跟踪（最新在前）", "parameters": [NUMBER_PARAM],
                "responses": {"200": _json({"type": "object", "properties": {"log": {
                    "type": "array", "items": {"$ref": "#/components/schemas/Step"}}}}), **_errors(401, 404)}}},
            "/api/tickets/{number}/actions": {"post": {
                "summary": "执行办理操作（受理、转办、转办退回、移交、退回、不予受理、自行和解、调解成功、调解失败、"
                           "启用质保金赔偿、办结、答复、审核通过、审核退回、重新派单、督办、补充凭证、关联来电、调整风险等级）",
                "parameters": [NUMBER_PARAM],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"oneOf": _action_bodies()}}}},
                "responses": {"200": _json({"type": "object", "properties": {
                    "ticket": ticket, "step": {"$ref": "#/components/schemas/Step"}}}),
                    **_errors(400, 401, 403, 404, 409)}}},
            "/api/tickets/{number}/risk": {"post": {
                "summary": "人工调整风险等级", "parameters": [NUMBER_PARAM],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["level", "remark"], "properties": {
                        "level": FIELD_SCHEMAS["level"], "remark": {"type": "string"}}}}}},
                "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 403, 404, 409)}}},
            "/api/tickets/{number}/evidence": {"get": {
                "summary": "工单的凭证列表（文件名、类型、大小、SHA-256、上传时间、查看地址）",
                "parameters": [NUMBER_PARAM],
                "responses": {"200": _json({"type": "object", "properties": {
                    "number": {"type": "string"}, "evidence": {"type": "array", "items": {"type": "object"}}}}),
                    **_errors(401, 404)}}, "post": {
                "summary": "补充凭证（图片或 PDF，按文件内容识别，最大 10 MB）", "parameters": [NUMBER_PARAM],
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["file"],
                    "properties": {"file": binary, "remark": {"type": "string"}}}}}},
                "responses": {"201": _json({"type": "object"}, "已保存"), **_errors(400, 401, 404, 413, 415)}}},
            "/api/tickets/{number}/evidence/{evidence_id}": {"get": {
                "summary": "查看或下载一份凭证（原文件名、按上传时识别的类型返回）",
                "parameters": [NUMBER_PARAM, {"name": "evidence_id", "in": "path", "required": True,
                                              "description": "凭证编号", "schema": {"type": "integer"}},
                               _query("download", "为 1 时作为附件下载，否则在浏览器中打开", {"type": "boolean"})],
                "responses": {"200": {"description": "凭证文件", "content": {
                    t: {"schema": binary} for t in ("image/png", "image/jpeg", "image/gif", "image/webp",
                                                     "application/pdf")}}, **_errors(401, 404)}}},
            "/api/tickets/{number}/archive": {"get": {
                "summary": "结案归档表（附录 C 咨询 / D 投诉 / E 举报）", "parameters": [
                    NUMBER_PARAM, _query("format", "格式", {"type": "string", "enum": ["pdf", "xlsx"]})],
                "responses": {"200": {"description": "文件", "content": {
                    "application/pdf": {"schema": binary},
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {"schema": binary}}},
                    **_errors(400, 401, 404, 409)}}},
            "/api/tickets/openapi.json": {"get": {"summary": "本文档",
                                                  "responses": {"200": _json({"type": "object"})}}},
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string", "description": "中文错误说明"},
                "field": {"type": "string", "description": "出错的字段"}}},
            "Ticket": {"type": "object", "required": ["number", "kind", "state", "hotline"], "properties": {
                "number": {"type": "string"}, "kind": {"type": "string", "enum": [k.value for k in Kind]},
                "state": {"type": "string", "enum": [s.value for s in State]}, "state_label": {"type": "string"},
                "hotline": {"type": "string"}, "days_left": {"type": "integer", "nullable": True},
                "risk": {"type": "object"}, "supervised": {"type": "boolean"},
                "acceptance_due": {"type": "string", "format": "date", "nullable": True},
                "handling_due": {"type": "string", "format": "date", "nullable": True},
                "actions": {"type": "array", "items": {"type": "string"}}}},
            "Step": {"type": "object", "properties": {
                "action": {"type": "string"}, "operator": {"type": "string"}, "at": {"type": "string",
                                                                                    "format": "date-time"},
                "state": {"type": "string"}, "remark": {"type": "string"}, "inputs": {"type": "object"}}},
        }},
    }
