"""The action catalogue shipped as data, and how a service extends it."""

from __future__ import annotations

import pytest
from activity_schemas.catalogue import (
    ActionCatalogue,
    ActionCategory,
    CatalogueEntry,
    CatalogueError,
    default_catalogue,
)

SEED_ACTIONS = {
    "signal.registered": ActionCategory.MUTATION,
    "dataset.previewed": ActionCategory.OBSERVATION,
    "pipeline.run_started": ActionCategory.EXECUTION,
    "macro.saved": ActionCategory.MUTATION,
    "run.cancelled": ActionCategory.EXECUTION,
    "portfolio.constraints_updated": ActionCategory.MUTATION,
    "promotion.merged": ActionCategory.MUTATION,
    "guardrails.blocked": ActionCategory.OBSERVATION,
    "monitoring.threshold_breach": ActionCategory.OBSERVATION,
    "resource.deleted": ActionCategory.MUTATION,
    "subscription.created": ActionCategory.MUTATION,
    "preference.updated": ActionCategory.MUTATION,
}


@pytest.mark.parametrize(("action", "category"), SEED_ACTIONS.items())
def test_shipped_catalogue_holds_the_action_with_its_category(
    action: str, category: ActionCategory
) -> None:
    catalogue = default_catalogue()

    assert catalogue[action].category is category
    assert catalogue.is_mutation(action) is (category is ActionCategory.MUTATION)


def test_shipped_catalogue_marks_nothing_critical_yet() -> None:
    catalogue = default_catalogue()

    assert len(catalogue) >= 60
    assert not any(entry.critical for entry in catalogue.values())


def test_unknown_action_has_no_category_and_is_no_mutation() -> None:
    catalogue = default_catalogue()

    assert catalogue.category("invoice.paid") is None
    assert not catalogue.is_mutation("invoice.paid")


def test_with_actions_adds_service_actions_and_keeps_the_rest() -> None:
    extended = default_catalogue().with_actions({"invoice.paid": "mutation"})

    assert extended["invoice.paid"] == CatalogueEntry("invoice.paid", ActionCategory.MUTATION)
    assert "signal.registered" in extended
    assert "invoice.paid" not in default_catalogue()


def test_with_actions_rejects_an_unknown_category() -> None:
    with pytest.raises(CatalogueError, match=r"'invoice\.paid' has the unknown category 'money'"):
        default_catalogue().with_actions({"invoice.paid": "money"})


def test_malformed_action_name_in_data_is_rejected() -> None:
    with pytest.raises(CatalogueError, match=r"action 'Invoice' must be `<resource>.<verb>`"):
        ActionCatalogue.from_json('{"actions": {"Invoice": {"category": "mutation"}}}')


def test_duplicate_action_in_data_is_rejected() -> None:
    text = (
        '{"actions": {"invoice.paid": {"category": "mutation"},'
        ' "invoice.paid": {"category": "observation"}}}'
    )

    with pytest.raises(CatalogueError, match=r"keys \['invoice.paid'\] appear more than once"):
        ActionCatalogue.from_json(text, "invoices.json")


def test_critical_flag_is_read_from_data() -> None:
    catalogue = ActionCatalogue.from_json(
        '{"actions": {"invoice.paid": {"category": "mutation", "critical": true}}}'
    )

    assert catalogue["invoice.paid"].critical


def test_entry_without_category_is_rejected() -> None:
    with pytest.raises(CatalogueError, match=r"'invoice\.paid' in catalogue x\.json needs an"):
        ActionCatalogue.from_json('{"actions": {"invoice.paid": {}}}', "x.json")


def test_data_without_actions_object_is_rejected() -> None:
    with pytest.raises(CatalogueError, match='catalogue <string> has no "actions" object'):
        ActionCatalogue.from_json("[]")
