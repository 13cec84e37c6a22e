"""Which datasets the course uses, where they live on the internet and how they look on disk.

Every remote file is pinned by its SHA-256 and byte size, copied from a public source (see the
comment above each entry), never computed here. A file whose bytes differ is refused, so a
half-finished download, a captive-portal HTML page or a tampered mirror can never reach a model.
A file no server hands out directly (CelebA's Google Drive copies) has no URL: the student places
it by hand and ``fetch`` checks it against the same pinned SHA-256.

Nothing here touches the disk or the network; this module is plain data plus two look-ups.
"""
from __future__ import annotations

import re
import types
from dataclasses import dataclass
from typing import Literal, Mapping

Extract = Literal["zip", "tar.gz"]


class DataError(RuntimeError):
    """A dataset problem a student can fix; the message says how.

    Raised for unknown names, failed downloads, checksum mismatches, read-only caches and
    malformed files. Command-line tools print the message and exit non-zero instead of showing a
    traceback.
    """


@dataclass(frozen=True)
class FileSpec:
    """One remote file of a dataset.

    Parameters
    ----------
    filename : str
        Name of the file inside the dataset directory (the archive itself is kept there).
    url : str
        Primary download location.
    sha256 : str
        Lower-case hex SHA-256 of the exact bytes (64 characters).
    size : int
        Size in bytes; checked before hashing, so a truncated file fails fast.
    extract : {None, "zip", "tar.gz"}
        Unpack the file into the dataset directory after verification, or keep it as is.
    mirrors : tuple of str
        Further locations serving the same bytes, tried in order when the previous one fails.
        The checksum, not the host, is what is trusted.
    manual : str
        For a file with no download location (``url=""``, e.g. one behind a Google Drive or
        Baidu page): where on the dataset's ``homepage`` a person finds it. ``fetch`` then only
        verifies and unpacks a copy placed by hand, and otherwise says where to get it.
    """

    filename: str
    url: str
    sha256: str
    size: int
    extract: Extract | None = None
    mirrors: tuple[str, ...] = ()
    manual: str = ""

    @property
    def urls(self) -> tuple[str, ...]:
        """Every location to try, primary first; empty for a file that must be placed by hand."""
        return tuple(u for u in (self.url, *self.mirrors) if u)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its files and the layout ``verify`` checks after extraction.

    Parameters
    ----------
    name : str
        Registry key and directory name under the cache root.
    description : str
        One line for ``gankit data list``.
    files : tuple of FileSpec
        The remote files.
    layout : str
        Short name of the on-disk format (``"idx-gz"``, ``"cifar-python"``, ``"cyclegan"``).
    required : tuple of str
        Paths, relative to the dataset directory, that must exist once the dataset is ready.
    license : str
        License / terms-of-use note, shown to students.
    homepage : str
        Where the dataset is described.
    """

    name: str
    description: str
    files: tuple[FileSpec, ...]
    layout: str
    required: tuple[str, ...]
    license: str = ""
    homepage: str = ""

    @property
    def size(self) -> int:
        """Total download size in bytes."""
        return sum(f.size for f in self.files)


_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# ---------------------------------------------------------------------------------------------
# MNIST. Checksums and sizes: tensorflow/datasets, tensorflow_datasets/url_checksums/mnist.txt
# (entries for the CVDF mirror). The ossci mirror is the one torchvision falls back to.
_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": (
        9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train-labels-idx1-ubyte.gz": (
        28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "t10k-images-idx3-ubyte.gz": (
        1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "t10k-labels-idx1-ubyte.gz": (
        4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}

# Fashion-MNIST. Checksums and sizes: tensorflow/datasets, url_checksums/fashion_mnist.txt (for
# the Zalando S3 bucket, which is http only). keras-team/keras keras/src/datasets/fashion_mnist.py
# pins the same SHA-256s to the https Keras mirror used as primary here.
_FASHION_FILES = {
    "train-images-idx3-ubyte.gz": (
        26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    "train-labels-idx1-ubyte.gz": (
        29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    "t10k-images-idx3-ubyte.gz": (
        4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    "t10k-labels-idx1-ubyte.gz": (
        5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
}

# CycleGAN unpaired sets. Checksums and sizes: tensorflow/datasets, url_checksums/cycle_gan.txt,
# recorded for the original people.eecs.berkeley.edu/~taesung_park/ location; the archives now
# live on the efrosgans server (the CycleGAN repository's download script points there). Both
# are listed; the checksum decides.
_CYCLEGAN_FILES = {
    "horse2zebra": (
        116867962, "a74d9d392eecca9966b51287a76ca126af473d9de4f3e8fc0e9cda08fa1730a1",
        "Horses <-> zebras (ImageNet photos), 256x256 JPEG"),
    "apple2orange": (
        78456409, "845a191e9af8926408ea597001cd03a452e3300a1f44a79fe329b3d59f6e3eb8",
        "Apples <-> oranges (ImageNet photos), 256x256 JPEG"),
    "summer2winter_yosemite": (
        132640856, "167fe1726807a9d22bd106b4a6c0bd7953b688af924ac1bf967439c4961e49f9",
        "Yosemite in summer <-> winter (Flickr), 256x256 JPEG"),
    "monet2photo": (
        305231073, "88f91b00fc228f97c9411fbf1880ec1d119c98f1722e4cfcfaa2fb35fac05b04",
        "Monet paintings <-> landscape photos, 256x256 JPEG"),
    "maps": (
        1476754427, "639534f69dbf9f36bef8d6292a7698006361221f83f0285d7c9ca78afe6e8a9e",
        "Aerial photos <-> Google Maps tiles (NYC), 600x600 JPEG"),
}

# CelebA (aligned & cropped images and the 40 attribute labels), for StarGAN. The official copies
# sit in Google Drive / Baidu folders behind the homepage, which serve no plain download URL, so
# the files are placed by hand and only verified here. SHA-256 and sizes: tensorflow/datasets,
# url_checksums/celeb_a.txt (entries for the Drive files 0B7EVK8r0v71pZjFTYXZWM3FlRnM =
# img_align_celeba.zip and 0B7EVK8r0v71pblRyaVFSWGxPY0U = list_attr_celeba.txt). The same two
# SHA-256s are pinned in pytorch/vision's torchvision/prototype/datasets/_builtin/celeba.py, and
# the archive's in pytorch/tutorials' .jenkins/download_data.py (for its copy on S3).
# torchvision's celeba.py pins the MD5s 00d2c5bc6d35e252742224ab0c1e8fcb (zip) and
# 75e246fa4810816ffd6ee81facbd244c (attributes).
CELEBA_HOMEPAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
_CELEBA_FILES = (
    FileSpec(
        filename="img_align_celeba.zip", url="", extract="zip", size=1443490838,
        sha256="46fb89443c578308acf364d7d379fe1b9efb793042c0af734b6112e4fd3a8c74",
        manual="'Align&Cropped Images' -> Google Drive (or Baidu) folder Img/ -> "
               "img_align_celeba.zip (1.4 GB; not the PNG or in-the-wild 7z archives)"),
    FileSpec(
        filename="list_attr_celeba.txt", url="", size=26721026,
        sha256="f0e5da289d5ccf75ffe8811132694922b60f2af59256ed362afa03fefba324d0",
        manual="same Google Drive (or Baidu) share, folder Anno/ -> list_attr_celeba.txt"),
)

# Kodak Lossless True Color Image Suite: 24 photos, the standard test set of image compression.
# Served as single PNGs (no archive) from the r0k.us copy the homepage links to. Checksums and
# sizes: computed from the r0k.us copies mirrored in
# MohamedBakrAli/Kodak-Lossless-True-Color-Image-Suite (PhotoCD_PCD0992/NN.png, uploaded by its
# download script from r0k.us) and matching independent published SHA-256 lists for r0k.us (e.g. a
# JPEG 2000 corpus sha256sum block and a KODAK_SHA256 table with sizes).
KODAK_HOMEPAGE = "http://r0k.us/graphics/kodak/"
_KODAK_BASE = "https://r0k.us/graphics/kodak/kodak/"
_KODAK_FILES = {
    "kodim01.png": (
        736501, "a56e27cbf5f843c048b6af1d6e090760e9c92fadba88b7dee0205918a37523bd"),
    "kodim02.png": (
        617995, "4f4b74a79237e311d72cad958237b5f7088d8bce1c82305ebefe1a70e3022dfd"),
    "kodim03.png": (
        502888, "e25ca1ff2f0c0cb5fdfd5f9b0a0bb21ac4c3de3c84a67f35b09a85d3306249db"),
    "kodim04.png": (
        637432, "e3b946107c5d3441c022f678d0c3caf1e224d81b1604ba840a4f88e562de61aa"),
    "kodim05.png": (
        785610, "10349e963c5c813d327852f82c1795fa4148d69fedffc4c589bee458e3ac3d53"),
    "kodim06.png": (
        618959, "363510303b715d4cbc384e1ce227e466b613a09e1b71ae985882bf8e7fbd9b18"),
    "kodim07.png": (
        566322, "b77d3f006f42414bb242222e0482e750c0fb9e5ee8d4bed2f6f11c5605fe54a4"),
    "kodim08.png": (
        788470, "ba23983c76b4832ee0e8af0592664756841a16779acd69f792e268fb6d13d6e7"),
    "kodim09.png": (
        582899, "6a4361c2fc194feb4edaa9f9a4a0620fb9943e460ac7fdf037fb0f6dd6607a7d"),
    "kodim10.png": (
        593463, "9dfb70f5867c29ff9ed6313683f19b3d867849e40fbc0c4c54a4a89df341cf23"),
    "kodim11.png": (
        621023, "7936814b58b5387fce2e4e2488b4ec830dadd95fa9520f358ddb30990b50f2b6"),
    "kodim12.png": (
        531024, "d78c37c2f04f23761ed2367dd77e2db584ddd4c3950833fecf89f199a8126980"),
    "kodim13.png": (
        822712, "bc34a3ce58dea09dce1704c997171602de90cb34d0c8503a988b77f473d39b08"),
    "kodim14.png": (
        692201, "55a94550ff18f3246c4074fd32b77b0c74447c26b6ad274d564d999c0450ba6e"),
    "kodim15.png": (
        612582, "7538cbb80cb9103606c48b806eae57d56c885c7f90b9b3be70a41160f9cbb683"),
    "kodim16.png": (
        534247, "a89c7268ccd4718ba424a99fc4643c572cf692ca6eae887185ceb4e9f11d2e54"),
    "kodim17.png": (
        602078, "37afcc89fbdcb76d9518e04b2fc011027e2f4cd14b3b2f83cefd721641a47c5b"),
    "kodim18.png": (
        780947, "1a9258c365988961d87a0598725b609139c303ad48a5aad6c503c3b1a87849aa"),
    "kodim19.png": (
        671476, "b7450b264b1b0a411390d8931b112c27905a992520fc90569dc4b920aa32bbdc"),
    "kodim20.png": (
        492462, "3b46c71e3b92a563820ba32936be8330c586c41f938efd94be938386aae4328a"),
    "kodim21.png": (
        637051, "ac958597c82073f6bb65129c68f72b651db5b9efd82e11547d07350214bc268b"),
    "kodim22.png": (
        701970, "1cee58eb1f2d9c7ebb254d208a03c783ce6cf2c4d8c2cf45e235dd23b4ce1b29"),
    "kodim23.png": (
        557596, "e3111a2fd4da24af15d6459ef9eacfe54106b38e27b4a21821b75c3f5d2d5baf"),
    "kodim24.png": (
        706397, "1071c68372cc5a01435c2c225a5cf7d4bb803846ec08bb6b3d6721b156d7cb96"),
}
#: The six Kodak images stored upright, 512 wide x 768 high; the other 18 are 768 x 512.
KODAK_PORTRAIT = ("kodim04.png", "kodim09.png", "kodim10.png", "kodim17.png", "kodim18.png",
                  "kodim19.png")

_IDX_REQUIRED = tuple(_MNIST_FILES)  # same four names for MNIST and Fashion-MNIST
_CIFAR_DIR = "cifar-10-batches-py"
_CYCLEGAN_SPLITS = ("trainA", "trainB", "testA", "testB")


def _idx_dataset(name: str, description: str, table: dict, base: str, mirrors: tuple[str, ...],
                 license: str, homepage: str) -> DatasetSpec:
    files = tuple(
        FileSpec(filename=fn, url=base + fn, sha256=sha, size=size,
                 mirrors=tuple(m + fn for m in mirrors))
        for fn, (size, sha) in table.items()
    )
    return DatasetSpec(name=name, description=description, files=files, layout="idx-gz",
                       required=_IDX_REQUIRED, license=license, homepage=homepage)


def _cyclegan_dataset(name: str, size: int, sha: str, description: str) -> DatasetSpec:
    filename = f"{name}.zip"
    return DatasetSpec(
        name=name,
        description=description,
        files=(FileSpec(
            filename=filename,
            url=f"https://efrosgans.eecs.berkeley.edu/cyclegan/datasets/{filename}",
            sha256=sha, size=size, extract="zip",
            mirrors=("https://people.eecs.berkeley.edu/~taesung_park/CycleGAN/datasets/"
                     + filename,),
        ),),
        layout="cyclegan",
        required=tuple(f"{name}/{split}" for split in _CYCLEGAN_SPLITS),
        license="Research use; images keep their original owners' terms (ImageNet, Flickr, "
                "WikiArt, Google Maps). Cite Zhu et al., ICCV 2017.",
        homepage="https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix",
    )


def _build_registry() -> Mapping[str, DatasetSpec]:
    specs = [
        _idx_dataset(
            "mnist", "Handwritten digits 0-9, 28x28 grey, 60k train / 10k test", _MNIST_FILES,
            base="https://storage.googleapis.com/cvdf-datasets/mnist/",
            mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",),
            license="Y. LeCun, C. Cortes, C. Burges; free for research (CC BY-SA 3.0 as "
                    "commonly stated).",
            homepage="http://yann.lecun.com/exdb/mnist/",
        ),
        _idx_dataset(
            "fashion_mnist", "Zalando clothing, 10 classes, 28x28 grey, 60k train / 10k test",
            _FASHION_FILES,
            base="https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
            mirrors=("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/"
                     "data/fashion/",),
            license="MIT license, (c) Zalando SE.",
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        ),
        # CIFAR-10 python tarball. SHA-256: keras-team/keras keras/src/datasets/cifar10.py
        # (file_hash for this URL). Size: the Content-Length the Toronto server sends (170498071,
        # as recorded in many public download logs and in Nervana neon's CIFAR10 loader).
        DatasetSpec(
            name="cifar10",
            description="Tiny natural images, 10 classes, 32x32 RGB, 50k train / 10k test",
            files=(FileSpec(
                filename="cifar-10-python.tar.gz",
                url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                size=170498071, extract="tar.gz",
            ),),
            layout="cifar-python",
            required=tuple(f"{_CIFAR_DIR}/{b}" for b in (
                *(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")),
            license="A. Krizhevsky, 2009; no explicit license, cite the tech report.",
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        ),
        *(_cyclegan_dataset(name, size, sha, desc)
          for name, (size, sha, desc) in _CYCLEGAN_FILES.items()),
        DatasetSpec(
            name="celeba",
            description="Celebrity faces, aligned & cropped 178x218 JPEG, 202,599 images with 40 "
                        "binary attributes (StarGAN); placed by hand",
            files=_CELEBA_FILES,
            layout="celeba",
            required=("img_align_celeba", "list_attr_celeba.txt"),
            license="Non-commercial research and educational use only, under the CelebA "
                    "agreement on the homepage; cite Liu et al., ICCV 2015.",
            homepage=CELEBA_HOMEPAGE,
        ),
        DatasetSpec(
            name="kodak",
            description="Kodak Lossless True Color Image Suite, 24 RGB PNGs 768x512 / 512x768 "
                        "(the standard image-compression test set)",
            files=tuple(FileSpec(filename=fn, url=_KODAK_BASE + fn, sha256=sha, size=size)
                        for fn, (size, sha) in _KODAK_FILES.items()),
            layout="kodak",
            required=tuple(_KODAK_FILES),
            license="Released by the Eastman Kodak Company for unrestricted usage (as stated on "
                    "the homepage)",
            homepage=KODAK_HOMEPAGE,
        ),
    ]
    return types.MappingProxyType({s.name: s for s in specs})


#: Every known dataset by name. Read-only: pass ``spec=`` to ``fetch`` for anything else.
REGISTRY: Mapping[str, DatasetSpec] = _build_registry()


def list_datasets() -> list[str]:
    """Names of the registered datasets, in registry order."""
    return list(REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    """Look a dataset up by name.

    Raises
    ------
    DataError
        If the name is unknown; the message lists the known names.
    """
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise DataError(
            f"unknown dataset {name!r}; known datasets: {', '.join(REGISTRY)}"
        ) from None


def check_spec(spec: DatasetSpec) -> list[str]:
    """Problems with a spec's own fields (empty when it is well formed); used by the tests."""
    problems = []
    names = [f.filename for f in spec.files]
    if len(set(names)) != len(names):
        problems.append(f"{spec.name}: duplicate file names {names}")
    for f in spec.files:
        if not _SHA256.match(f.sha256):
            problems.append(f"{spec.name}/{f.filename}: sha256 is not 64 lower-case hex digits")
        if not (isinstance(f.size, int) and f.size > 0):
            problems.append(f"{spec.name}/{f.filename}: size must be a positive int")
        if "/" in f.filename or f.filename.startswith("."):
            problems.append(f"{spec.name}/{f.filename}: filename must be a plain name")
        if f.extract not in (None, "zip", "tar.gz"):
            problems.append(f"{spec.name}/{f.filename}: unknown extract {f.extract!r}")
        if not f.urls and not (f.manual and spec.homepage):
            problems.append(f"{spec.name}/{f.filename}: no url, and no homepage + manual "
                            "instructions to get it by hand")
    if not spec.required:
        problems.append(f"{spec.name}: no required paths, verify could not check the layout")
    return problems
