"""Pascal VOC XML annotation files read into a small tree that knows its line numbers.

:func:`read_voc_xml` parses one file with expat (the parser under ``xml.etree``) into
:class:`XmlNode` s: the tag, the text, the child elements and the line each element starts on,
so that a data set can name ``file:line`` in every message about the file. A file that is not
well-formed XML, or whose root is not ``<annotation>``, raises :class:`VOCAnnotationError`.
:class:`~detkit.datasets.VOCDataset` and :class:`~detkit.datasets.CCTSDBDataset` read their XML
files with it; docs/datasets.md states what each does with a bad file.
"""
from __future__ import annotations

import xml.parsers.expat
from dataclasses import dataclass, field

from detkit.errors import InputError


class VOCAnnotationError(InputError):
    """A malformed VOC XML file or ``<object>``; the message names ``file:line`` and the field."""


@dataclass
class XmlNode:
    """One XML element of a VOC file.

    Attributes:
        tag: the element's name, e.g. ``'object'``.
        line: the 1-based line its start tag is on.
        text: the character data directly inside it, e.g. ``'with_mask'`` for
            ``<name>with_mask</name>``; ``''`` when there is none.
        children: its child elements, in document order.
    """

    tag: str
    line: int
    text: str = ''
    children: list[XmlNode] = field(default_factory=list)

    def child(self, tag: str) -> XmlNode | None:
        """The first child element named ``tag``; ``None`` when there is none."""
        return next((c for c in self.children if c.tag == tag), None)

    def child_text(self, tag: str) -> str | None:
        """The text of the first child named ``tag`` (``''`` when it is empty); ``None`` when
        there is no such child."""
        node = self.child(tag)
        return None if node is None else node.text

    def children_named(self, tag: str) -> list[XmlNode]:
        """Every child element named ``tag``, in document order (e.g. each ``<object>``)."""
        return [c for c in self.children if c.tag == tag]


def read_voc_xml(path: str) -> XmlNode:
    """Parse a Pascal VOC XML file into :class:`XmlNode` s with line numbers.

    Args:
        path: the ``.xml`` file.

    Returns:
        The root element, an ``<annotation>``.

    Raises:
        FileNotFoundError: the file does not exist.
        VOCAnnotationError: (a ``ValueError``) the file is not well-formed XML (the message
            names ``path:line``, expat's reason and the column) or its root element is not
            ``<annotation>``.

    Example:
        >>> # a file of the synthetic face-mask set (tools/misc/make_synthetic.py facemask)
        >>> root = read_voc_xml('data/facemask/annotations/train00000.xml')
        >>> root.child_text('filename'), root.children_named('object')[0].line
        ('train00000.png', 10)
    """
    parser = xml.parsers.expat.ParserCreate()
    parser.buffer_text = True
    stack: list[XmlNode] = []
    roots: list[XmlNode] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        node = XmlNode(tag, parser.CurrentLineNumber)
        (stack[-1].children if stack else roots).append(node)
        stack.append(node)

    def end(tag: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    with open(path, 'rb') as f:
        data = f.read()
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as err:
        raise VOCAnnotationError(
            f'{path}:{err.lineno}: not a well-formed XML file: '
            f'{xml.parsers.expat.ErrorString(err.code)} (column {err.offset + 1})') from None
    root = roots[0]  # expat accepts no document without exactly one root element
    if root.tag != 'annotation':
        raise VOCAnnotationError(f'{path}:{root.line}: the root element must be <annotation> '
                                 f'(Pascal VOC), got <{root.tag}>')
    return root
