"""Japanese personal data masked before it leaves: addresses (住所), phone numbers, My Number —
in prose, in the bundled Japanese documents' style, and on the wire."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from polycascade import Task
from polycascade.catalog import Catalog
from polycascade.gateway import Gateway
from polycascade.governor import Governor
from polycascade.graphs.cascade import Cascade
from polycascade.ledger import MemoryLedger
from polycascade.policies.config import DataClassRule, Policy
from polycascade.policies.redaction import redact_text
from polycascade.testing import ScriptedServer

from .test_security import valid_my_number

ADDRESSES = [
    "〒100-0005 東京都千代田区丸の内1-1-1",
    "大阪府大阪市北区梅田三丁目1番3号",
    "神奈川県横浜市西区みなとみらい2-3-1",
    "北海道札幌市中央区北1条西2丁目",
    "京都府京都市左京区吉田本町36番地1",
    "〒６００－８２１６ 京都府京都市下京区烏丸通七条下る東塩小路町７２１－１",
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_an_address_is_masked_to_its_last_number(address: str) -> None:
    masked = redact_text(f"送付先：{address} パレスビル3階 山田太郎様", ["address"])
    assert masked == "送付先：[ADDRESS] パレスビル3階 山田太郎様"


@pytest.mark.parametrize(
    "text",
    ["東京都の会議は 2026-12-08 に開催します。", "大阪府警の発表では3件", "第3四半期の売上は前年比12%増", "〒マーク"],
)
def test_what_is_not_an_address_is_left_alone(text: str) -> None:
    assert redact_text(text, ["address"]) == text


def test_a_japanese_contract_loses_its_personal_data_on_the_wire_to_api_vendors() -> None:
    my_number = valid_my_number()
    contract = (
        "業務委託契約書\n委託者：山田太郎（住所：〒150-0002 東京都渋谷区渋谷二丁目21番1号、"
        "電話：０３－１２３４－５６７８、"
        f"個人番号：{my_number[:4]} {my_number[4:8]} {my_number[8:]}、メール：taro@example.co.jp）は、"
        "受託者に対し、本契約に定める業務を委託する。"
    )
    server = ScriptedServer(lambda req: "承知しました").start()
    try:
        api = server.model("v/api", vendor="Mistral", jurisdiction="FR", quality=0.9)
        catalog = Catalog.bundled().with_models([api])
        rule = DataClassRule(redact=["address", "phone", "my_number", "email"])
        governor = Governor(Policy(name="p", data_classes={"customer": rule}, default_data_class="customer"))
        cascade = Cascade(Gateway(catalog, MemoryLedger()), [catalog["v/api"]], governor=governor)
        asyncio.run(cascade.run(Task(contract, data_class="customer")))
        sent = json.loads(server.requests[0].raw.decode("utf-8"))["messages"][-1]["content"]
        assert "渋谷区" not in sent and "1234" not in sent and my_number[:4] not in sent and "taro@" not in sent
        assert "[ADDRESS]" in sent and "[PHONE]" in sent and "[MY_NUMBER]" in sent and "[EMAIL]" in sent
        assert "山田太郎" in sent and "業務委託契約書" in sent  # names are not patterns a rule can find
    finally:
        server.stop()


def test_the_bundled_customer_record_keeps_nothing_a_rule_can_find() -> None:
    record = (Path(__file__).parents[1] / "examples/jp/顧客対応記録.txt").read_text(encoding="utf-8")
    masked = redact_text(record, ["address", "phone", "my_number", "email"])
    for leaked in ("梅田", "博多駅前", "06-1234", "090-8765", "hanako.sato", "1234 5678 9018", "530-0001"):
        assert leaked not in masked, leaked
    assert masked.count("[ADDRESS]") == 2 and masked.count("[PHONE]") == 2 and "[MY_NUMBER]" in masked
    assert "佐藤花子" in masked and "請求書の送付先住所の変更依頼" in masked
