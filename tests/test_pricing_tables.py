"""The TOML tables: broken files fail loudly and precisely; the shipped ones pass sanity checks
that catch typos (cache-rate ratios, reasoning = output, batch = half, provenance present)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from pricing import PriceBook, PriceTableError, RateSet
from pricing._types import ModelEntry

RESEARCH_DATE = date(2026, 12, 5)  # the last day sources were read (pricing tables re-checked)

VALID = """\
schema = 1
provider = "acme"
currency = "USD"

[[models]]
id = "acme-1"
name = "Acme 1"
sources = [{ name = "test", ref = "tests/test_pricing_tables.py", checked = 2026-11-23 }]

[models.service_tiers.batch]
multiplier = "0.5"
sources = [{ name = "test", ref = "tests", checked = 2026-11-23 }]

[[models.periods]]
from = 2025-01-01
[models.periods.rates]
input = "3"
output = "15"
reasoning = "15"
cache_read = "0.30"

[[models.periods.tiers]]
above = 200000
[models.periods.tiers.rates]
input = "6"
output = "22.50"
reasoning = "22.50"
cache_read = "0.60"

[[models.periods]]
from = 2026-01-01
[models.periods.rates]
input = "2"
output = "10"
reasoning = "10"
"""

M = "models[acme-1]"
P0 = f"{M}.periods[0]"
SOURCES = (
    'sources = [{ name = "test", ref = "tests/test_pricing_tables.py", checked = 2026-11-23 }]'
)
UNDATED = 'sources = [{ name = "test", ref = "tests/test_pricing_tables.py" }]'
EXPLICIT = 'rates = { input = "1", output = "1", reasoning = "1" }'
PERIOD = "[[models.periods]]\nfrom = 2025-01-01"


def write(tmp_path: Path, text: str, name: str = "acme.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_valid_table_loads(tmp_path: Path) -> None:
    write(tmp_path, VALID)
    book = PriceBook.load(tmp_path)
    [model] = book.models()
    assert [p.rates.input for p in model.periods] == [Decimal("3"), Decimal("2")]
    assert model.periods[0].service_tiers["batch"].multiplier == Decimal("0.5")
    assert model.periods[0].tiers[0].rates.output == Decimal("22.50")


@pytest.mark.parametrize(
    ("old", "new", "key", "says"),
    [
        ('input = "3"\n', "input = 3.75\n", f"{P0}.rates.input", "decimal string"),
        ('input = "3"\n', 'input = "-3"\n', f"{P0}.rates.input", "decimal string"),
        ('input = "3"\n', 'input = "3e-6"\n', f"{P0}.rates.input", "decimal string"),
        (
            'cache_read = "0.30"\n',
            'cache_wirte_5m = "1"\n',
            f"{P0}.rates.cache_wirte_5m",
            "unknown key",
        ),
        ('reasoning = "15"\n', "", f"{P0}.rates.reasoning", "required"),
        ('cache_read = "0.60"\n', "", f"{P0}.tiers[0].rates.cache_read", "missing"),
        ("above = 200000", "above = -5", f"{P0}.tiers[0].above", "positive"),
        ("from = 2026-01-01", "from = 2024-01-01", f"{M}.periods[1].from", "increasing"),
        ("from = 2026-01-01", "from = 2026-01-01T16:00:00", f"{M}.periods[1].from", "offset"),
        ("from = 2026-01-01", 'from = "2026-01-01"', f"{M}.periods[1].from", "TOML date"),
        ('id = "acme-1"', 'id = "acme-1"\nmatch = ["Acme-1.5"]', f"{M}.match", "write it as"),
        ('multiplier = "0.5"', 'multiplier = "0"', f"{M}.service_tiers.batch.multiplier", "> 0"),
        (
            'multiplier = "0.5"',
            "multiplier = 0.5",
            f"{M}.service_tiers.batch.multiplier",
            "decimal",
        ),
        (
            'multiplier = "0.5"',
            f'multiplier = "0.5"\n{EXPLICIT}',
            f"{M}.service_tiers.batch",
            "not both",
        ),
        ('multiplier = "0.5"', EXPLICIT, f"{P0}.service_tiers.batch.rates.cache_read", "missing"),
        ('multiplier = "0.5"\n', "", f"{M}.service_tiers.batch", "needs notes"),
        (SOURCES, "", f"{M}.sources", "at least one source"),
        (SOURCES, UNDATED, f"{M}.sources[0].checked", "TOML date"),
        ('provider = "acme"', 'provider = "acme"\nmodles = []', "modles", "unknown key"),
        ('currency = "USD"', 'currency = "EUR"', "currency", "USD"),
        ("schema = 1", "schema = 2", "schema", "must be 1"),
        (PERIOD, f"{PERIOD}\nbogus = 1", f"{P0}.bogus", "unknown key"),
        ('name = "Acme 1"', 'name = "Acme 1', "(syntax)", "line"),
    ],
)
def test_broken_tables_name_the_file_and_the_key(
    tmp_path: Path, old: str, new: str, key: str, says: str
) -> None:
    assert VALID.count(old) == 1, old
    path = write(tmp_path, VALID.replace(old, new))
    with pytest.raises(PriceTableError) as caught:
        PriceBook.load(tmp_path)
    err = caught.value
    assert (err.file, err.key) == (str(path), key)
    assert str(err).startswith(f"{path}: {key}: ")
    assert says.replace("> 0", "greater than 0") in str(err)


def test_a_name_claimed_by_two_models(tmp_path: Path) -> None:
    second = VALID[VALID.index("[[models]]") :].replace('id = "acme-1"', 'id = "acme-2"')
    second = second.replace('name = "Acme 1"', 'name = "Acme 2"\nmatch = ["acme-1"]')
    path = write(tmp_path, VALID + "\n" + second)
    with pytest.raises(PriceTableError) as caught:
        PriceBook.load(tmp_path)
    assert (caught.value.file, caught.value.key) == (str(path), "models[acme-2].match")
    assert "'acme-1' is already claimed by model 'acme-1'" in str(caught.value)


def test_a_provider_defined_twice(tmp_path: Path) -> None:
    write(tmp_path, VALID, "a.toml")
    write(tmp_path, VALID, "b.toml")
    with pytest.raises(PriceTableError, match=r"b\.toml: provider: 'acme' is also defined in"):
        PriceBook.load(tmp_path)


def test_an_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(PriceTableError, match="no \\*.toml price tables"):
        PriceBook.load(tmp_path)


# --- the shipped tables -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.default()


def test_default_is_loaded_once(book: PriceBook) -> None:
    assert PriceBook.default() is book


def test_the_shipped_directory_loads_the_same(book: PriceBook) -> None:
    here = PriceBook.load(Path(__file__).resolve().parent.parent / "pricing" / "tables")
    assert [m.id for m in here.models()] == [m.id for m in book.models()]


def test_every_required_provider_has_a_table(book: PriceBook) -> None:
    providers = {t.provider for t in book.tables}
    assert {"anthropic", "openai", "google", "deepseek", "qwen", "zai"} <= providers


def _rate_sets(model: ModelEntry) -> list[tuple[str, RateSet]]:
    found = []
    for period in model.periods:
        here = f"{model.id}@{period.start.date()}"
        found.append((here, period.rates))
        found += [(f"{here}>{t.above}", t.rates) for t in period.tiers]
        for name, mod in period.service_tiers.items():
            if mod.rates is not None:
                found.append((f"{here}/{name}", mod.rates))
                found += [(f"{here}/{name}>{t.above}", t.rates) for t in mod.tiers]
    return found


def anthropic_ratio_violations(model: ModelEntry) -> list[str]:
    """5m write = 1.25x input, 1h write = 2x, read = 0.1x: a typo in any rate breaks one."""
    bad = []
    for where, rates in _rate_sets(model):
        assert rates.input is not None
        for cls, factor in (
            ("cache_write_5m", "1.25"),
            ("cache_write_1h", "2"),
            ("cache_read", "0.1"),
        ):
            if rates.get(cls) != rates.input * Decimal(factor):
                bad.append(f"{where}.{cls} = {rates.get(cls)} (input {rates.input} × {factor})")
    return bad


def test_anthropic_cache_ratios(book: PriceBook) -> None:
    claude = [m for m in book.models() if m.provider == "anthropic"]
    assert len(claude) > 10
    for model in claude:
        bad = anthropic_ratio_violations(model)
        if model.ratio_exception:
            assert bad, f"{model.id}: ratio_exception but no exception in the rates"
        else:
            assert not bad, bad
    assert any(m.ratio_exception for m in claude)  # Fable 5.1's $0.25 read


def test_the_ratio_check_catches_a_typo(tmp_path: Path) -> None:
    claude = (
        Path(__file__).resolve().parent.parent / "pricing" / "tables" / "anthropic.toml"
    ).read_text()
    # Sonnet 4.5's 1-hour write typed as the 5-minute rate: 3.75 instead of 6.
    sonnet = claude.index('id = "claude-sonnet-4-5"')
    one_hour = claude.index('cache_write_1h = "6"', sonnet)
    write(tmp_path, claude[:one_hour] + 'cache_write_1h = "3.75"' + claude[one_hour + 20 :])
    [typo] = [m for m in PriceBook.load(tmp_path).models() if m.id == "claude-sonnet-4-5"]
    assert anthropic_ratio_violations(typo) == [
        "claude-sonnet-4-5@2025-09-29.cache_write_1h = 3.75 (input 3 × 2)"
    ]


def test_reasoning_is_billed_as_output_everywhere(book: PriceBook) -> None:
    for model in book.models():
        for where, rates in _rate_sets(model):
            assert rates.reasoning == rates.output, where


def test_long_context_costs_more(book: PriceBook) -> None:
    for model in book.models():
        for period in model.periods:
            previous = period.rates
            for tier in period.tiers:
                assert tier.rates.input is not None and previous.input is not None
                assert tier.rates.output is not None and previous.output is not None
                assert tier.rates.input > previous.input, (model.id, tier.above)
                assert tier.rates.output > previous.output, (model.id, tier.above)
                previous = tier.rates


def test_batch_is_half_price_everywhere(book: PriceBook) -> None:
    batches = [
        p.service_tiers["batch"]
        for m in book.models()
        for p in m.periods
        if "batch" in p.service_tiers
    ]
    assert len(batches) > 20
    assert {b.multiplier for b in batches} == {Decimal("0.5")}


def test_other_providers_cache_shapes(book: PriceBook) -> None:
    by_id = {m.id: m for m in book.models()}
    for _, rates in _rate_sets(by_id["qwen3-coder-plus"]):
        assert rates.input is not None
        assert rates.cache_read == rates.input * Decimal("0.2")  # implicit hit
        assert rates.cache_write_5m == rates.input * Decimal("1.25")  # explicit creation
        assert rates.cache_write_1h is None
    flash = by_id["deepseek-v4-flash"].periods[0].rates
    assert flash.input is not None and flash.cache_read == flash.input * Decimal("0.02")
    for model in book.models():
        if model.provider == "zai":
            assert all(r.cache_write_5m == 0 for _, r in _rate_sets(model)), model.id
        if model.id.startswith("gpt-5.6"):
            for where, r in _rate_sets(model):
                assert r.input is not None
                assert r.cache_write_5m == r.input * Decimal("1.25"), where
                assert r.cache_write_1h is None


def test_every_figure_has_dated_provenance(book: PriceBook) -> None:
    for model in book.models():
        for period in model.periods:
            assert period.sources, model.id
            for source in period.sources:
                assert source.name and source.ref
                assert date(2024, 1, 1) <= source.checked <= RESEARCH_DATE, (model.id, source)
            for kind in ("service_tiers", "speeds", "inference_geos"):
                for mod in period.modifiers(kind).values():
                    assert mod.sources, (model.id, kind, mod.name)


def test_every_rate_is_an_exact_decimal(book: PriceBook) -> None:
    for model in book.models():
        for where, rates in _rate_sets(model):
            for key in ("input", "output", "reasoning", "cache_read", "cache_write_5m"):
                value = rates.get(key)
                assert value is None or type(value) is Decimal, (where, key)


def test_unverified_and_conflict_notes_are_carried(book: PriceBook) -> None:
    notes = [n for m in book.models() for n in m.notes]
    notes += [n for m in book.models() for p in m.periods for t in p.tiers for n in t.notes]
    text = " ".join(notes)
    assert "[unverified]" in text and "[conflict]" in text
