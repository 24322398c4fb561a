"""Fake but realistic people (names, e-mails, phones, national ids) derived from a hash, never stored.

Everything here is personal data that ingestion must drop; :class:`Canaries` lets a privacy test plant
known values and later search every output for them.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

FIRST_NAMES = (
    "Juan",
    "María",
    "Sofía",
    "Mateo",
    "Valentina",
    "Santiago",
    "Lucía",
    "Benjamín",
    "Martina",
    "Joaquín",
    "Catalina",
    "Tomás",
    "Camila",
    "Lautaro",
    "Florencia",
    "Agustín",
    "Julieta",
    "Facundo",
    "Milagros",
    "Nicolás",
    "Agustina",
    "Thiago",
    "Micaela",
    "Franco",
    "Rocío",
    "Gonzalo",
    "Paula",
    "Ignacio",
    "Ana",
    "Federico",
    "Carolina",
    "Matías",
    "Daniela",
    "Ezequiel",
    "Romina",
    "Diego",
    "Belén",
    "Lucas",
    "Noelia",
    "Martín",
)
LAST_NAMES = (
    "González",
    "Rodríguez",
    "Gómez",
    "Fernández",
    "López",
    "Díaz",
    "Martínez",
    "Pérez",
    "García",
    "Sánchez",
    "Romero",
    "Sosa",
    "Torres",
    "Álvarez",
    "Ruiz",
    "Ramírez",
    "Flores",
    "Benítez",
    "Acosta",
    "Medina",
    "Herrera",
    "Suárez",
    "Aguirre",
    "Giménez",
    "Gutiérrez",
    "Pereyra",
    "Rojas",
    "Molina",
    "Castro",
    "Ortiz",
    "Silva",
    "Núñez",
    "Luna",
    "Juárez",
    "Cabrera",
    "Ríos",
    "Ferreyra",
    "Godoy",
    "Morales",
    "Domínguez",
)
MAIL_DOMAINS = ("gmail.com", "hotmail.com", "yahoo.com.ar", "outlook.com", "live.com.ar")
# Phone prefixes: country calling code and a typical area code per region (falls back to the country's).
PHONE_COUNTRY = {"AR": "+54 9", "UY": "+598 9", "CL": "+56 9", "BR": "+55", "CO": "+57 3"}
PHONE_AREA = {"buenos_aires": "11", "cordoba": "351", "rosario": "341", "mendoza": "261", "sao_paulo": "11"}
ID_DOCUMENT = {"AR": "DNI", "UY": "CI", "CL": "RUT", "BR": "CPF", "CO": "CC"}

MASK64 = (1 << 64) - 1


def mix64(x: int) -> int:
    """splitmix64 finalizer: a fast, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


@dataclass(frozen=True)
class Canaries:
    """Known personal values planted in the first user, payer and professional (for privacy tests)."""

    name: str = ""
    email: str = ""
    phone: str = ""
    dni: str = ""
    license_number: str = ""

    def any(self) -> bool:
        return any((self.name, self.email, self.phone, self.dni, self.license_number))


@dataclass(frozen=True)
class Person:
    first_name: str
    last_name: str
    email: str
    phone: str
    dni: str
    id_type: str

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def person(h: int, country: str, region: str) -> Person:
    """The fake person behind a 64-bit hash (stable: the same user always has the same data)."""
    first = FIRST_NAMES[h % len(FIRST_NAMES)]
    last = LAST_NAMES[(h >> 8) % len(LAST_NAMES)]
    email = f"{_ascii(first)}.{_ascii(last)}{(h >> 16) % 1000}@{MAIL_DOMAINS[(h >> 26) % len(MAIL_DOMAINS)]}"
    area = PHONE_AREA.get(region, "2")
    digits = f"{(h >> 30) % 100_000_000:08d}"
    phone = f"{PHONE_COUNTRY.get(country, '+1')} {area} {digits[:4]}-{digits[4:]}"
    dni = str(20_000_000 + (h >> 20) % 26_000_000)
    return Person(first, last, email, phone, dni, ID_DOCUMENT.get(country, "DNI"))


def canary_person(base: Person, canaries: Canaries) -> Person:
    """``base`` with every non-empty canary value planted."""
    first, last = base.first_name, base.last_name
    if canaries.name:
        first, _, rest = canaries.name.partition(" ")
        last = rest or last
    return Person(
        first, last, canaries.email or base.email, canaries.phone or base.phone, canaries.dni or base.dni, base.id_type
    )
