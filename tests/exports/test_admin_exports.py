import re

from django.urls import reverse
from knox.models import AuthToken


def test_explore(admin_client, data_member, grader, client):
    url = reverse("admin:auth_user_changelist")
    r = admin_client.post(url, {"action": "issue_api_token", "_selected_action": [data_member.pk]})
    print(r.status_code, r.headers)
    html = r.content.decode()
    m = re.search(r'<code class="gc-token[^"]*">([^<]+)</code>', html)
    print(m.group(1), list(AuthToken.objects.values()))
    token = m.group(1)
    r = client.get("/api/studies/", HTTP_AUTHORIZATION=f"Token {token}")
    print(r.status_code, r.content[:200])
    r = admin_client.get(reverse("admin:knox_authtoken_changelist"))
    print(r.status_code, token in r.content.decode(), token[:15] in r.content.decode())
    r = admin_client.get(reverse("admin:knox_authtoken_add"))
    print(r.status_code)
    r = admin_client.post(url, {"action": "issue_api_token", "_selected_action": [grader.pk]}, follow=True)
    print(r.status_code, r.redirect_chain, [(m.level, str(m)) for m in r.context["messages"]])
    print(AuthToken.objects.count())
