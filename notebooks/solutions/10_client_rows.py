def client_rows(connection, client_id):
    """One nest's rows of table `penguins`: the four measurements and the species, by one query for that nest."""
    query = ('SELECT "Culmen Length (mm)", "Culmen Depth (mm)", "Flipper Length (mm)", "Body Mass (g)", "Species" '
             'FROM penguins WHERE nest = ?')
    return connection.execute(query, (client_id,)).fetchall()
