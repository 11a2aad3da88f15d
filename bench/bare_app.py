"""The yardstick: a FastAPI endpoint that only answers 200, served as Kengele is (uvloop, httptools)."""

from fastapi import FastAPI, Response

app = FastAPI()


@app.post("/webhooks/twilio/sms")
async def bare() -> Response:
    return Response("<Response/>", media_type="text/xml")
