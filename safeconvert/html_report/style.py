"""The page's stylesheet, inlined into every report so the file needs nothing beside it."""

CATEGORY_COLOURS = {
    "TOOL": "#8250df",
    "PP": "#0969da",
    "ID": "#1b7c83",
    "TSS": "#bc4c00",
    "WB": "#bf3989",
    "LH": "#9a6700",
    "CG": "#57606a",
}

STATUS_COLOURS = {"applied": "#1a7f37", "rolled back": "#9a6700"}  # anything else: red

CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --soft:#f6f8fa; --ok:#1a7f37; --bad:#cf222e; --warn:#9a6700; }
* { box-sizing: border-box; }
body { margin:0; background:#eef1f4; color:var(--fg);
       font:14px/1.45 -apple-system, "Segoe UI", "Noto Sans", "DejaVu Sans", Helvetica, Arial, sans-serif; }
main { max-width:1120px; margin:0 auto; padding:20px 24px 40px; }
h1 { font-size:22px; margin:0 0 2px; }
h2 { font-size:16px; margin:0 0 10px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:16px 18px; margin:14px 0; }
.sub { color:var(--muted); }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size:12.5px; }
.paths code { word-break:break-all; }
.verdict { display:flex; gap:16px; align-items:center; border-radius:8px; padding:14px 18px; margin:14px 0;
           color:#fff; }
.verdict.ok { background:var(--ok); } .verdict.bad { background:var(--bad); } .verdict.err { background:var(--warn); }
.verdict .big { font-size:24px; font-weight:700; letter-spacing:.5px; white-space:nowrap; }
.verdict ul { margin:4px 0 0; padding-left:18px; }
.tiles { display:grid; grid-template-columns:repeat(auto-fit, minmax(180px, 1fr)); gap:10px; }
.tile { background:var(--soft); border:1px solid var(--line); border-radius:6px; padding:10px 12px; }
.tile .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.4px; }
.tile .v { font-size:19px; font-weight:600; white-space:nowrap; }
.tile .v .arrow { color:var(--muted); font-weight:400; padding:0 4px; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:var(--soft); font-weight:600; font-size:12.5px; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tr.group td { background:#fbfbfc; font-weight:600; border-top:2px solid var(--line); }
.chip { display:inline-block; padding:1px 8px; border-radius:10px; color:#fff; font-size:12px; font-weight:600;
        white-space:nowrap; }
.chip.off { background:#d8dee4 !important; color:#6e7781; }
.chips { display:flex; flex-wrap:wrap; gap:6px; margin-bottom:10px; }
.layer { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size:12px;
         word-break:break-all; }
.fused { color:var(--muted); font-size:11.5px; }
.evidence { margin:0; padding:0; list-style:none; font-size:12.5px; }
.evidence li { white-space:normal; }
.evidence b { font-weight:600; color:var(--muted); }
.plot { width:100%; height:auto; display:block; }
.plot .tick { font-size:11px; fill:#57606a; }
.plot .axis { font-size:12px; fill:#1f2328; }
.plot .note { font-size:11px; fill:#6e7781; }
.plot .first { font-size:12px; font-weight:600; fill:#d1242f; }
.legend { display:flex; gap:18px; flex-wrap:wrap; font-size:12.5px; color:var(--muted); margin-top:6px; }
.swatch { display:inline-block; width:18px; height:3px; vertical-align:middle; margin-right:6px; }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(330px, 1fr)); gap:12px; }
.card { border:1px solid var(--line); border-radius:6px; padding:10px; display:grid;
        grid-template-columns:96px 1fr; gap:10px; }
.card img, .card .noimg { width:96px; height:96px; border-radius:4px; object-fit:cover; background:var(--soft); }
.card .noimg { display:flex; align-items:center; justify-content:center; color:var(--muted); font-size:11px;
               text-align:center; }
.card .name { font-weight:600; word-break:break-all; }
.card .cols { display:grid; grid-template-columns:minmax(0, 1fr) minmax(0, 1fr); gap:8px; margin-top:4px; }
.card li { overflow-wrap:anywhere; }
.card ol { margin:2px 0 0; padding-left:18px; font-size:12px; }
.card .colhead { font-size:11px; color:var(--muted); text-transform:uppercase; letter-spacing:.3px; }
.card .foot { grid-column:1 / -1; font-size:12px; color:var(--muted); border-top:1px dashed var(--line);
              padding-top:6px; }
.same { color:var(--ok); font-weight:600; } .changed { color:var(--bad); font-weight:600; }
.fixed { color:var(--ok); font-weight:600; } .still { color:var(--bad); font-weight:600; }
.status-note { color:var(--muted); }
.kv { display:grid; grid-template-columns:max-content 1fr; gap:4px 14px; font-size:13px; }
.kv div:nth-child(odd) { color:var(--muted); }
footer { color:var(--muted); font-size:12px; text-align:center; margin-top:18px; }
@media print { body { background:#fff; } section { break-inside:avoid; } }
"""
