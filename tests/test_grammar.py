from tests.grammar import gbnf_literal


def test_gbnf_literal_escapes_quotes_backslashes_and_control_characters():
    assert gbnf_literal('a"b\\c\td€') == '"a\\"b\\\\c\\x09d€"'
