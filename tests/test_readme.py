"""The README is a front door: short, and its configuration table is the settings themselves."""

from __future__ import annotations

from service.settings import settings_table
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_the_configuration_table_is_made_from_the_settings():
    start = README.index("<!-- settings table")
    table = README[README.index("\n", start) + 1:README.index("<!-- end of settings table -->")].strip()
    assert table == settings_table(), "regenerate it: python -c 'from service.settings import settings_table; " \
                                      "print(settings_table())'"


def test_the_readme_fits_on_a_screen_or_three():
    assert len(README.splitlines()) <= 150
