"""ASGI entry point for the tutorial chat: `python3 -m daphne asgi:application` with
this directory on PYTHONPATH and DJANGO_SETTINGS_MODULE=settings. The tutorial's
routing (ws/chat/<room_name>/); the AuthMiddlewareStack of the tutorial is left out
because this project has no database."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from consumers import ChatConsumer  # noqa: E402

websocket_urlpatterns = [
    re_path(r"ws/chat/(?P<room_name>\w+)/$", ChatConsumer.as_asgi()),
]

application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": URLRouter(websocket_urlpatterns),
})
