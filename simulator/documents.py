"""Placeholder invoice files the simulator serves at the URLs it puts in invoices.

| kind | content type | body |
|---|---|---|
| ``pdf`` | ``application/pdf`` | a one-page PDF naming the invoice (valid xref) |
| ``ofd`` | ``application/ofd`` | an OFD package (zip) with ``OFD.xml`` and a document stub |
| ``xml`` | ``application/xml`` | the invoice's key fields as XML (数电 XML stand-in) |

URL: ``{tenant base}/doc/free/fileInfo/preview/{orderNo}.{kind}`` (the real cloud serves files
from api*.piaozone.com; clients must not assume a host).
"""

from __future__ import annotations

import io
import zipfile
from xml.sax.saxutils import escape

from simulator.bills import SimBill, SimInvoice

__all__ = ["CONTENT_TYPES", "FILE_PATH", "file_url", "render_file"]

FILE_PATH = "/doc/free/fileInfo/preview/"
CONTENT_TYPES: dict[str, str] = {
    "pdf": "application/pdf",
    "ofd": "application/ofd",
    "xml": "application/xml",
}


def file_url(origin: str, order_no: str, kind: str) -> str:
    return f"{origin}{FILE_PATH}{order_no}.{kind}"


def render_file(bill: SimBill, invoice: SimInvoice, kind: str) -> bytes:
    if kind == "pdf":
        return _pdf(f"Invoice {invoice.invoice_code}{invoice.invoice_num} bill {bill.bill_no}")
    if kind == "ofd":
        return _ofd(bill, invoice)
    if kind == "xml":
        return _xml(bill, invoice).encode("utf-8")
    raise ValueError(f"unknown file kind {kind!r}")


def _pdf(text: str) -> bytes:
    safe = text.encode("ascii", "replace").decode("ascii").replace("(", "[").replace(")", "]")
    stream = f"BT /F1 12 Tf 40 760 Td ({safe}) Tj ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def _ofd(bill: SimBill, invoice: SimInvoice) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr(
            "OFD.xml",
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<ofd:OFD xmlns:ofd="http://www.ofdspec.org/2016" Version="1.1" DocType="OFD">'
            "<ofd:DocBody><ofd:DocInfo>"
            f"<ofd:DocID>{escape(invoice.order_no)}</ofd:DocID>"
            f"<ofd:Title>{escape(invoice.invoice_num)}</ofd:Title>"
            "</ofd:DocInfo><ofd:DocRoot>Doc_0/Document.xml</ofd:DocRoot></ofd:DocBody></ofd:OFD>",
        )
        package.writestr("Doc_0/Document.xml", _xml(bill, invoice))
    return buffer.getvalue()


def _xml(bill: SimBill, invoice: SimInvoice) -> str:
    fields = {
        "BillNo": bill.bill_no,
        "InvoiceType": bill.invoice_type,
        "InvoiceCode": invoice.invoice_code,
        "InvoiceNumber": invoice.invoice_num,
        "IssueDate": invoice.invoice_date,
        "SellerTaxID": bill.seller_tax_id,
        "BuyerName": str(bill.header.get("buyerName", "")),
        "TotalAmount": format(invoice.total_amount, "f"),
        "TotalTax": format(invoice.total_tax_amount, "f"),
        "TotalTaxIncluded": format(invoice.include_tax_amount, "f"),
    }
    body = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in fields.items())
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<EInvoice>{body}</EInvoice>\n'
