import io
import openpyxl
from django.urls import reverse
from tests.factories import PatientFactory


def test_explore(admin_client, study):
    PatientFactory(study=study, age_years=None, sex="", code="@SUM(1+1)")
    PatientFactory(study=study, code="+1+1")
    PatientFactory(study=study, code="-1+1")
    url = reverse("admin:studies_patient_export")
    base = {"resource": "0", **{f"patientresource_{n}": "on" for n in ["id", "study", "code", "age_years", "sex", "created_at"]}}
    for fmt in "013":
        r = admin_client.post(url, {**base, "format": fmt})
        if fmt == "1":
            print([[c.value for c in row] for row in openpyxl.load_workbook(io.BytesIO(r.content)).active.rows])
        else:
            print(r.content.decode())
